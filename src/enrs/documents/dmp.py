"""Sending a document of the regional repository to the national DMP (Mon espace santé).

The DMP takes documents by IHE ITI-41 *Provide and Register Document Set-b* (XDS.b, SOAP 1.2
with MTOM/XOP) and their later corrections and withdrawals by IHE ITI-57 *Update Document Set*
(XDS Metadata Update, plain SOAP 1.2); the requests are built by :mod:`enrs.documents.xds`.
:class:`DmpAdapter` is the seam the export task uses; :class:`XdsDmpAdapter` is its HTTP
implementation (client certificate and CA bundle for the DMP's mutual TLS; ITI-57 goes to the
same endpoint unless another is given). Tests use a fake DMP served on localhost
(``tests/support/fake_dmp.py``).

Every answer, and every failure to get one, is turned into a :class:`DmpOutcome` by one
function, :func:`classify`:

- ``accepted``: ``Success``, or ``PartialSuccess`` (the document is registered; the warnings
  are kept);
- ``already-present``: ``Failure`` whose errors all say a uniqueId is already held
  (:data:`ALREADY_PRESENT_CODES`), one of them naming the document's uniqueId in its
  ``codeContext`` (ITI TF-3 asks the registry to name the id there): a re-send of a document
  the DMP has is a success, which makes re-sends idempotent. A duplicate that is not this
  document's (a submission set uniqueId used again for another document) is ``refused``;
- ``retry-later``: no answer (connection refused or broken, timeout), HTTP 5xx / 408 / 429
  without a readable RegistryResponse, a SOAP ``Receiver`` fault, or a ``Failure`` whose
  errors are all transient (:data:`TRANSIENT_CODES`: registry or repository busy, out of
  resources, unavailable, or an internal error without a more precise code);
- ``already-present`` for an ITI-57 update: ``Failure`` whose errors all say the update no
  longer applies to the DMP's state, one of them naming in its ``codeContext`` the state the
  update asks for (:attr:`XdsUpdate.evidence`): for a new version,
  ``XDSMetadataVersionError`` (``PreviousVersion`` is not the latest version) naming the new
  version's entryUUID as the latest (that entryUUID is derived from the document and the
  version, so a repeat sends the same one); for a status change, ``XDSMetadataUpdateError``
  (``OriginalStatus`` is not the status) naming the new status. That is what the fake DMP
  answers to a repeat, and the rule assumed of the DMP, to be confirmed on its test platform:
  it holds only if the DMP names its latest version, not the submitted one, in a version
  error. A version error naming another version (an update made elsewhere) is ``refused``,
  never counted as done;
- ``refused``: everything else, permanent: the DMP's error codes and messages are kept
  (``XDSRegistryMetadataError``, ``XDSUnknownPatientId``, ``XDSNonIdenticalHash``, a SOAP
  ``Sender`` fault, an HTTP 4xx, an answer that cannot be read).

With a :class:`~enrs.documents.vihf.VihfSigner` (the feed gives one whenever it has the
structure's certificate) every request carries a signed VIHF in its ``wsse:Security`` header
(:mod:`enrs.documents.vihf`), and every ITI-41 submission set its XAdES signature document
(:mod:`enrs.documents.xades`); a document whose author has no RPPS number cannot have a VIHF
and is ``refused`` without being sent.

A document that cannot make valid metadata is not sent: :func:`enrs.documents.xds.check`
raises :class:`enrs.documents.xds.InvalidXdsDocument` from :meth:`XdsDmpAdapter.send`.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from types import TracebackType
from typing import Protocol

import httpx
from lxml import etree

from enrs.documents import vihf, xades, xds
from enrs.documents.xds import RegistryError, XdsDocument, XdsUpdate

ALREADY_PRESENT_CODES = frozenset({"XDSDuplicateUniqueIdInRegistry"})
"""The errors that mean "this uniqueId is already held": IHE's code, which the DMP answers for
a document it already has. A uniqueId held with *another* hash is ``XDSNonIdenticalHash``:
another document under the same id, refused."""

VERSION_APPLIED_CODES = frozenset({"XDSMetadataVersionError"})
"""The ITI-57 error of a new version whose ``PreviousVersion`` is no longer the latest version
(ITI TF-2b 3.57.4.1.3.3.1): already applied when it names the new version's entryUUID."""
STATUS_APPLIED_CODES = frozenset({"XDSMetadataUpdateError"})
"""The ITI-57 error of a status change whose ``OriginalStatus`` is no longer the status (ITI
TF-2b 3.57.4.1.3.3.2): already applied when it names the new status."""

TRANSIENT_CODES = frozenset(
    {
        "XDSRegistryBusy",
        "XDSRepositoryBusy",
        "XDSRegistryOutOfResources",
        "XDSRepositoryOutOfResources",
        "XDSRegistryNotAvailable",
        # ITI TF-3: returned "if and only if a more detailed code is not available"; an internal
        # error of the DMP, worth a retry (the caller's retry budget bounds it).
        "XDSRegistryError",
        "XDSRepositoryError",
    }
)
TRANSIENT_HTTP = frozenset({408, 429})
ACCEPT = "multipart/related, application/soap+xml"  # a bare SOAP answer, or one in MTOM


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    ALREADY_PRESENT = "already-present"
    REFUSED = "refused"
    RETRY_LATER = "retry-later"


@dataclass(frozen=True)
class DmpOutcome:
    """What became of one send: the verdict, the DMP's errors (or warnings) and a readable
    detail (the HTTP status, the fault, the transport error)."""

    verdict: Verdict
    errors: tuple[RegistryError, ...] = ()
    detail: str = ""

    @property
    def delivered(self) -> bool:
        """The DMP holds the document (accepted now or before)."""
        return self.verdict in (Verdict.ACCEPTED, Verdict.ALREADY_PRESENT)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(error.code for error in self.errors)


class DmpAdapter(Protocol):
    """The DMP as the export task sees it."""

    def send(self, doc: XdsDocument) -> DmpOutcome: ...

    def update(self, update: XdsUpdate) -> DmpOutcome: ...


def _names(context: str, value: str) -> bool:
    """``context`` names ``value`` (an OID, a URN) as a whole word: not ``1.2.3`` in
    ``1.2.34`` or ``1.2.3.4``."""
    return re.search(rf"(?<![\w.^-]){re.escape(value)}(?![\w.^-])", context) is not None


def _classify_result(result: xds.RegistryResult, evidence: str, done: frozenset[str]) -> DmpOutcome:
    if result.status in ("Success", "PartialSuccess"):
        return DmpOutcome(Verdict.ACCEPTED, result.errors, result.status)
    errors = [e for e in result.errors if e.severity == "Error"]
    codes = {e.code for e in errors}
    detail = "; ".join(f"{e.code}: {e.context}" for e in errors) or "Failure without an error"
    if not codes or codes - done - TRANSIENT_CODES:
        return DmpOutcome(Verdict.REFUSED, result.errors, detail)
    if codes & TRANSIENT_CODES:
        return DmpOutcome(Verdict.RETRY_LATER, result.errors, detail)
    if any(e.code in done and _names(e.context, evidence) for e in errors):
        return DmpOutcome(Verdict.ALREADY_PRESENT, result.errors, detail)
    return DmpOutcome(Verdict.REFUSED, result.errors, f"not this document's {evidence}: {detail}")


def classify(
    answer: httpx.Response | httpx.HTTPError,
    evidence: str,
    *,
    done: frozenset[str] = ALREADY_PRESENT_CODES,
) -> DmpOutcome:
    """The outcome of one exchange: the DMP's HTTP answer, or the error raised while sending
    or waiting for it. ``evidence`` is what an answer names when the DMP already holds the
    request, with one of the ``done`` errors: the document's uniqueId for ITI-41, and
    :attr:`XdsUpdate.evidence` with :data:`VERSION_APPLIED_CODES` or
    :data:`STATUS_APPLIED_CODES` for ITI-57 (see the
    module's documentation for the rules)."""
    if isinstance(answer, httpx.HTTPError):
        return DmpOutcome(Verdict.RETRY_LATER, detail=f"{type(answer).__name__}: {answer}")
    status = answer.status_code
    try:
        result = xds.parse_registry_response(answer.content, answer.headers.get("content-type", ""))
    except xds.SoapFault as fault:
        verdict = Verdict.RETRY_LATER if fault.code == "Receiver" else Verdict.REFUSED
        return DmpOutcome(verdict, detail=f"HTTP {status}, {fault}")
    except xds.UnreadableResponse as exc:
        transient = status >= 500 or status in TRANSIENT_HTTP
        verdict = Verdict.RETRY_LATER if transient else Verdict.REFUSED
        return DmpOutcome(verdict, detail=f"HTTP {status}: {exc}")
    return _classify_result(result, evidence, done)


class XdsDmpAdapter:
    """The DMP's ITI-41 endpoint over HTTPS: ``endpoint`` (also the ``wsa:To``), its ITI-57
    ``update_endpoint`` (the same by default), the client certificate ``(cert file, key
    file)`` of the structure, the CA bundle the DMP's server certificate is checked against
    (the system's by default), a ``timeout`` in seconds for each of connecting, writing
    and reading, and the ``vihf_signer`` that signs the VIHF put in every request's header."""

    def _header(self, doc: XdsDocument) -> list[etree._Element]:
        """The VIHF header for ``doc`` (none without a signer); raises
        :class:`~enrs.documents.vihf.NoProfessionalId`."""
        if self.vihf_signer is None:
            return []
        return [vihf.security_header(doc, self.vihf_signer, self._clock())]

    def __init__(
        self,
        endpoint: str,
        *,
        update_endpoint: str | None = None,
        client_cert: tuple[str, str] | None = None,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
        vihf_signer: vihf.VihfSigner | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.endpoint = endpoint
        self.vihf_signer = vihf_signer
        self._clock = clock
        self.update_endpoint = update_endpoint or endpoint
        context = ssl.create_default_context(cafile=ca_bundle)
        if client_cert is not None:
            context.load_cert_chain(certfile=client_cert[0], keyfile=client_cert[1])
        self._client = httpx.Client(verify=context, timeout=httpx.Timeout(timeout))

    def send(self, doc: XdsDocument) -> DmpOutcome:
        """ITI-41 for ``doc``; never raises for what the DMP or the network does (that is the
        outcome), only :class:`~enrs.documents.xds.InvalidXdsDocument` for ``doc`` itself."""
        try:
            header = self._header(doc)
        except vihf.NoProfessionalId as exc:
            return DmpOutcome(Verdict.REFUSED, detail=str(exc))
        signature = (
            None
            if self.vihf_signer is None
            else xades.sign_submission(doc, self.vihf_signer, self._clock())
        )
        body, content_type = xds.provide_and_register(
            doc, to=self.endpoint, header=header, signature=signature
        )
        headers = {  # SOAP 1.2: the action travels in the Content-Type, no SOAPAction header
            "Content-Type": content_type,
            "Accept": ACCEPT,
        }
        try:
            answer = self._client.post(self.endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return classify(exc, doc.unique_id)
        return classify(answer, doc.unique_id)

    def update(self, update: XdsUpdate) -> DmpOutcome:
        """ITI-57 for ``update``; like :meth:`send`, never raises for what the DMP or the
        network does, only :class:`~enrs.documents.xds.InvalidXdsDocument`."""
        try:
            header = self._header(update.doc)
        except vihf.NoProfessionalId as exc:
            return DmpOutcome(Verdict.REFUSED, detail=str(exc))
        body, content_type = xds.update_document_set(update, to=self.update_endpoint, header=header)
        headers = {"Content-Type": content_type, "Accept": ACCEPT}
        try:
            answer = self._client.post(self.update_endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return classify(exc, update.evidence)
        done = STATUS_APPLIED_CODES if update.new_status else VERSION_APPLIED_CODES
        return classify(answer, update.evidence, done=done)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> XdsDmpAdapter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
