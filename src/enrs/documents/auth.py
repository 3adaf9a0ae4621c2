"""The permissions the document repository's endpoints declare in their signatures.

SMART scopes: filing (ITI-65) needs ``DocumentReference.c``; finding documents (ITI-67)
``DocumentReference.s``, reading one ``DocumentReference.r``; retrieving a content (ITI-68)
``Binary.r``; finding submission sets (ITI-66) ``List.s``; withdrawing or correcting
``DocumentReference.u``. A person also needs the ``professional`` role. Every call is audited
by :func:`enrs.kit.http.require`; which patients and documents a caller reads is the rule of
:mod:`enrs.documents.access`, applied by every query.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from enrs.kit.http import require
from enrs.kit.security.principal import Principal

PROFESSIONALS = frozenset({"professional"})
ADMINS = frozenset({"admin"})

DocumentFile = Annotated[
    Principal, Depends(require("DocumentReference", "create", roles=PROFESSIONALS))
]
DocumentSearch = Annotated[
    Principal, Depends(require("DocumentReference", "search-type", roles=PROFESSIONALS))
]
DocumentRead = Annotated[
    Principal, Depends(require("DocumentReference", "read", roles=PROFESSIONALS))
]
DocumentUpdate = Annotated[
    Principal, Depends(require("DocumentReference", "update", roles=PROFESSIONALS))
]
ContentRead = Annotated[Principal, Depends(require("Binary", "read", roles=PROFESSIONALS))]
SubmissionSetSearch = Annotated[
    Principal, Depends(require("List", "search-type", roles=PROFESSIONALS))
]
