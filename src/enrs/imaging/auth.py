"""The permissions the imaging archive's DICOMweb endpoints (:mod:`.web`) declare.

SMART scopes on ``ImagingStudy``: WADO-RS (retrieve instances, metadata, rendered images)
needs ``ImagingStudy.r`` (``system/ImagingStudy.r`` for a facility's software,
``user/ImagingStudy.r`` for an application acting for a person, who also needs the role
``professional``, ``admin`` or ``identitovigilance``); a search (QIDO-RS) needs
``ImagingStudy.s`` (same roles); STOW-RS needs ``system/ImagingStudy.c`` and is for system
clients only, bound to at least one assigning authority
(:func:`enrs.imaging.web.stow_caller`). Every call is audited by
:func:`enrs.kit.http.require` (category ``dicomweb``); which studies a reader may read is
the rule of :mod:`.access`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from enrs.kit.http import require
from enrs.kit.security.principal import Principal

# ``imaging-share``: an access code's session (:mod:`.share`), which reads its one study only.
READERS = frozenset({"professional", "admin", "identitovigilance", "imaging-share"})

StudyRead = Annotated[
    Principal, Depends(require("ImagingStudy", "read", roles=READERS, category="dicomweb"))
]
StudySearch = Annotated[
    Principal, Depends(require("ImagingStudy", "search-type", roles=READERS, category="dicomweb"))
]
StudyStore = Annotated[Principal, Depends(require("ImagingStudy", "create", category="dicomweb"))]
