"""DICOMweb (PS3.18) of the imaging archive, under ``/dicomweb``: WADO-RS, QIDO-RS, STOW-RS.

WADO-RS (PS3.18 10.4), scope ``ImagingStudy.r`` (:mod:`.auth`), the study readable by the
caller (:mod:`.access`):

- ``GET /dicomweb/studies/{study}[/series/{series}[/instances/{instance}]]``: the instances as
  ``multipart/related; type="application/dicom"``, each part a DICOM file (PS3.10) as the
  archive keeps it (the data set exactly as received, after its file meta information; for a
  study the cell corrected, with the corrected identifiers: :mod:`.outgoing`) and labelled
  with its ``transfer-syntax``. An Accept naming ``transfer-syntax=1.2.840.10008.1.2.1``
  gets them in Explicit VR Little Endian, compressed pixel data decoded
  (:mod:`.transcoding`); one naming JPEG-LS Lossless (``1.2.840.10008.1.2.4.80``), JPEG 2000
  Lossless (``1.2.840.10008.1.2.4.90``) or RLE Lossless (``1.2.840.10008.1.2.5``) gets them
  encoded in it (for a client short of bandwidth), the pixel values unchanged; one naming
  another syntax than the stored one (or than ``*``) answers 406, as does an instance that
  cannot be decoded or encoded. The files are read from the storage one at a time as the body
  goes out (the server holds one, not the study); one that cannot be read after the first cuts
  the answer, which then lacks its closing delimiter.
- ``.../metadata`` at the same three levels: DICOM JSON (PS3.18 F.2,
  ``application/dicom+json``), one object per instance; bulk data (pixel data, and binary
  values over 1 KiB) is left out. Each instance's attributes are read from its blob's start
  and end (:mod:`.parts`): the pixel data is neither fetched nor decrypted.
- ``.../instances/{instance}/frames/{n[,m…]}``: the frames' pixel data (PS3.18 10.4.1.1.5),
  ``multipart/related; type="application/octet-stream"``, one part a frame as stored (an
  uncompressed frame's bytes, or a compressed one's fragments), labelled with the stored
  ``transfer-syntax``; what the browser viewer (:mod:`.viewer`) draws. Those frames' bytes
  alone are read from the blob (:func:`.parts.frames`), not the whole instance. With
  ``transfer-syntax=1.2.840.10008.1.2.1`` compressed frames are given decoded. With a
  compressed media type (PS3.18 Table 8.7.3-5: ``image/jls``, ``image/jp2``,
  ``image/dicom-rle``, ``image/jpeg``, ``image/jpx``) they are given as stored when kept in
  one of its syntaxes, else encoded losslessly (JPEG-LS, JPEG 2000, RLE), each part labelled
  ``image/jls; transfer-syntax=…``. Frames decoded or encoded are those asked for only, each
  on its own (:func:`.transcoding.frames_in`) from a file of the instance's attributes and
  that frame alone (:func:`.parts.one_frame`), not the whole instance.
- ``.../instances/{instance}/rendered`` and ``.../frames/{n}/rendered``: the (first) frame as
  ``image/jpeg`` (the default) or ``image/png``, rescaled and windowed
  (:mod:`.rendering`), from that frame alone (:func:`.parts.one_frame`); 406 for another
  Accept, or an image that cannot be rendered.

QIDO-RS (PS3.18 10.6), scope ``ImagingStudy.s``: ``GET /dicomweb/studies``, ``/series``,
``/instances``, and inside a study ``/studies/{study}/series``, ``/studies/{study}/instances``,
``/studies/{study}/series/{series}/instances``; DICOM JSON. The matching is the archive's query
module's (:mod:`.query`, the one C-FIND uses: UID lists, wildcards, date ranges,
ModalitiesInStudy…), keys given by keyword or tag (``0020000D``), UID lists separated by ``,``;
``includefield`` adds return keys, ``limit`` (default 100, at most 1000) and ``offset`` page the
answer; 400 for an unknown attribute or a value not of its form. A search across the archive
shows the studies :func:`~enrs.imaging.access.visible_clause` allows (every study for the cell,
a client's own, and when it names a patient by PatientID and IssuerOfPatientID (an OID or a
registered domain's namespace; the RRI too), that patient's for a reader with a care
relationship) and those it names by StudyInstanceUID that the caller may read (each checked as
WADO-RS does; the others left out, counted in the audit record); a search inside a study answers
403 / 404 as WADO-RS. Audited (category ``dicomweb``, ``search-type``) with the patients shown.

STOW-RS (PS3.18 10.5): ``POST /dicomweb/studies`` and ``/dicomweb/studies/{study}``, a
``multipart/related; type="application/dicom"`` body of DICOM files, by a system client with
``system/ImagingStudy.c`` bound to at least one assigning authority (``enrs clients create
--authority`` or ``--finess``, as the identity feeders: :func:`stow_caller`). Each instance is
filed by the C-STORE code path (:class:`enrs.imaging.filing.Filing`), the client id recorded as
its sender, the client's authority (when it has exactly one) read as the issuer of a PatientID
sent without one, as an AE's. The answer (``application/dicom+json``) lists the stored
instances in ReferencedSOPSequence and the others in FailedSOPSequence with their
FailureReason (the C-STORE status: 0xC000 unreadable or truncated, 0xA900 not the instance or
study announced, 0x0111 archived with other content, 0xA700 out of resources): 200 all stored,
202 some, 409 none. 400 for a body that is not multipart or has no instance, 415 for another
media type than ``multipart/related; type="application/dicom"`` (of the request or a part).

Errors (problem+json): 401 without a token, 403 without the scope or role, or for a study the
caller may not read (as the document repository answers for a document), 404 for an unknown
UID (or frame). Every call is audited (category ``dicomweb``) with the study's patient; each
stored or refused STOW-RS instance has its own record too, as a C-STORE has.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from io import BytesIO
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from enrs.accounts import service as accounts_service
from enrs.documents import service as documents_service
from enrs.identity import domains
from enrs.identity import service as identity_service
from enrs.identity.config import IdentityConfig
from enrs.identity.service import PatientRef
from enrs.identity.xref import UnknownDomain, UnknownPatient
from enrs.imaging import decoding, outgoing, parts, query, rendering, repository, transcoding
from enrs.imaging.access import (
    StudyForbidden,
    StudyReader,
    readable_study,
    study_reader,
    visible_clause,
)
from enrs.imaging.auth import StudyRead, StudySearch, StudyStore
from enrs.imaging.encoding import Malformed, dataset_of
from enrs.imaging.filing import (
    CANNOT_UNDERSTAND,
    DOES_NOT_MATCH_SOP_CLASS,
    SUCCESS,
    Caller,
    Filing,
)
from enrs.imaging.models import Instance, Study
from enrs.imaging.service import (
    DatasetMismatch,
    Indexed,
    Received,
    UnreadableDataset,
    read_received,
)
from enrs.kit.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotAcceptable,
    NotFound,
    UnsupportedMediaType,
)
from enrs.kit.http import READS_ONLY, DbSession, TransactionalRoute
from enrs.kit.security.principal import Principal
from enrs.kit.storage import BlobStorage

log = logging.getLogger(__name__)
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")

router = APIRouter(route_class=TransactionalRoute, tags=["imaging"])

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
BULK_THRESHOLD = 1024


# --- content negotiation -----------------------------------------------------------------------


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str]


def _media(value: str) -> MediaRange:
    message = Message()
    message["content-type"] = value
    params = {k.lower(): v for k, v in message.get_params(failobj=[])[1:]}
    return MediaRange(value.split(";")[0].strip().lower(), params)


def _accept(request: Request) -> list[MediaRange]:
    """The Accept header's media ranges, best first (q=0 dropped); ``*/*`` when absent."""
    header = request.headers.get("accept", "").strip() or "*/*"
    ranges: list[tuple[float, int, MediaRange]] = []
    for position, part in enumerate(p for p in _split_accept(header) if p.strip()):
        found = _media(part)
        try:
            q = float(found.params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append((-q, position, found))
    return [r for _, _, r in sorted(ranges, key=lambda t: (t[0], t[1]))]


def _split_accept(header: str) -> list[str]:
    """Split on the commas outside quoted strings."""
    parts, current, quoted = [], "", False
    for char in header:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _accepts_dicom(request: Request, syntaxes: set[str]) -> str | None:
    """The transfer syntax the caller asked the stored files in: ``None`` when it takes them
    as they are, else Explicit VR Little Endian or a lossless syntax the archive encodes to
    (:data:`.transcoding.ENCODABLE`); 406 when it takes none of those."""
    offered = (transcoding.EXPLICIT, *transcoding.ENCODABLE)
    for found in _accept(request):
        if found.type in ("*/*", "multipart/*") and not found.params:
            return None
        if found.type == "multipart/related":
            kind = found.params.get("type", DICOM).lower()
            syntax = found.params.get("transfer-syntax", "*")
            if kind == DICOM and (syntax == "*" or syntaxes <= {syntax}):
                return None
            if kind == DICOM and syntax in offered:
                return syntax
    stored = ", ".join(sorted(syntaxes | set(offered)))
    raise NotAcceptable(
        f'give Accept: multipart/related; type="{DICOM}" (transfer-syntax * or {stored}): '
        "the archive returns the instances as stored, in Explicit VR Little Endian, or "
        "encoded losslessly"
    )


def _transcoded(content: bytes, syntax: str, target: str) -> bytes:
    """The file kept in ``syntax`` in ``target`` (:mod:`.decoding`), 406 when the instance
    cannot be given in it."""
    try:
        return decoding.transcoded(content, syntax, target)
    except transcoding.CannotTranscode as exc:
        raise NotAcceptable(str(exc)) from None


def _accepts_json(request: Request) -> None:
    for found in _accept(request):
        if found.type in ("*/*", "application/*", DICOM_JSON, "application/json"):
            return
    raise NotAcceptable(f"the metadata is given as {DICOM_JSON}")


def _rendered_type(request: Request) -> str:
    offered = rendering.MEDIA_TYPES
    for found in _accept(request):
        if found.type in ("*/*", "image/*"):
            return offered[0]
        if found.type in offered:
            return found.type
    raise NotAcceptable(f"rendered images are given as {', '.join(offered)}")


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    study: Study
    instances: list[tuple[Instance, str]]  # with their series UID
    corrected: outgoing.Identifiers | None  # the identifiers a corrected study's files carry out


def _audit(request: Request, **detail: Any) -> None:
    entry = request.state.audit[-1]
    entry.detail = json.dumps(detail, separators=(",", ":"))


def _readable(
    request: Request,
    session: Session,
    principal: Principal,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    *,
    what: str,
) -> Found:
    """The instances asked for, if the caller may read the study (:mod:`.access`): 404 for an
    unknown study, series or instance, 403 for a study they may not read (audited with its
    patient)."""
    entry = request.state.audit[-1]
    entry.entity_ref = f"ImagingStudy/{study_uid}"
    detail: dict[str, Any] = {"retrieve": what, "series": series_uid, "instance": sop_uid}
    study = repository.study(session, study_uid)
    if study is None:
        raise NotFound(f"study {study_uid} is unknown")
    try:
        granted = readable_study(session, study_reader(session, principal), study)
    except StudyForbidden as exc:
        if exc.patient is not None:
            entry.patient_ref = f"Patient/{exc.patient.rri}"
        raise
    if granted.patient is not None:
        entry.patient_ref = f"Patient/{granted.patient.rri}"
    if granted.access is not None and granted.access.emergency:
        detail.update(json.loads(documents_service.read_detail(granted.access) or "{}"))
    instances = repository.study_instances(session, study.id, series_uid, sop_uid)
    if not instances:
        level = "instance" if sop_uid else "series" if series_uid else "study"
        raise NotFound(f"no such {level} in study {study_uid}")
    detail["count"] = len(instances)
    _audit(request, **detail)
    return Found(study, instances, outgoing.corrected(session, study))


def _files(request: Request, found: Found) -> Iterator[tuple[str, bytes]]:
    """Each instance's stored transfer syntax and file, read from the storage as the iterator
    is consumed (the instances' keys are taken at the call: it may outlive the session)."""
    storage = request.app.state.storage
    corrected = found.corrected
    stored = [(instance.transfer_syntax_uid, instance.blob_key) for instance, _ in found.instances]
    for syntax, key in stored:
        content = storage.get(key)
        yield syntax, content if corrected is None else outgoing.rewrite(content, corrected)


def _multipart(request: Request, found: Found) -> Response:
    """The instances as a multipart body, read from the storage one at a time as the body is
    sent: the server holds one instance in memory, not the whole study. The first is read
    before answering (a blob that cannot be read or decoded is then an error status); one that
    cannot be read or decoded later cuts the answer (logged): the body then lacks its closing
    delimiter and, over HTTP/1.1, its last chunk, which a client sees as an incomplete answer."""
    target = _accepts_dicom(request, {i.transfer_syntax_uid for i, _ in found.instances})
    boundary = secrets.token_hex(16)
    uid = found.study.study_uid

    def labelled(item: tuple[str, bytes]) -> tuple[str, bytes]:
        syntax, content = item
        if target is None or syntax == target:
            return item
        return target, _transcoded(content, syntax, target)

    files = map(labelled, _files(request, found))
    first = next(files)

    def body() -> Iterator[bytes]:
        try:
            for syntax, content in itertools.chain((first,), files):
                yield (
                    f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax={syntax}\r\n\r\n"
                ).encode()
                yield content
                yield b"\r\n"
        except Exception:
            log.exception(
                "WADO-RS: study %s: an instance could not be read or decoded; answer cut", uid
            )
            raise
        yield f"--{boundary}--\r\n".encode()

    media = f'multipart/related; type="{DICOM}"; boundary={boundary}'
    return StreamingResponse(body(), media_type=media)


@router.get("/dicomweb/studies/{study}", summary="WADO-RS: retrieve a study")
def retrieve_study(
    request: Request, study: str, session: DbSession, principal: StudyRead
) -> Response:
    return _multipart(request, _readable(request, session, principal, study, what="instances"))


@router.get("/dicomweb/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(
    request: Request, study: str, series: str, session: DbSession, principal: StudyRead
) -> Response:
    found = _readable(request, session, principal, study, series, what="instances")
    return _multipart(request, found)


@router.get(
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}",
    summary="WADO-RS: retrieve an instance",
)
def retrieve_instance(
    request: Request,
    study: str,
    series: str,
    instance: str,
    session: DbSession,
    principal: StudyRead,
) -> Response:
    found = _readable(request, session, principal, study, series, instance, what="instances")
    return _multipart(request, found)


def _strip_bulk(ds: Dataset) -> Dataset:
    """Leave out the bulk data: pixel data, and binary values over :data:`BULK_THRESHOLD`."""
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value or []:
                _strip_bulk(item)
        elif elem.VR in BULK_VRS and (
            elem.tag in PIXEL_TAGS or len(elem.value or b"") > BULK_THRESHOLD
        ):
            del ds[elem.tag]
    return ds


def _metadata(request: Request, found: Found) -> Response:
    """Each instance's attributes, read from the start and the end of its blob: the pixel
    data in between is neither fetched nor decrypted (:func:`.parts.metadata`)."""
    _accepts_json(request)
    storage, corrected = request.app.state.storage, found.corrected
    answer = []
    for instance, _series in found.instances:
        with storage.reader(instance.blob_key) as reader:
            ds = parts.metadata(parts.open_file(reader))
        if corrected is not None:
            outgoing.correct(ds, corrected)
        answer.append(_strip_bulk(ds).to_json_dict())
    return Response(json.dumps(answer, separators=(",", ":")), media_type=DICOM_JSON)


@router.get("/dicomweb/studies/{study}/metadata", summary="WADO-RS: a study's metadata")
def study_metadata(
    request: Request, study: str, session: DbSession, principal: StudyRead
) -> Response:
    return _metadata(request, _readable(request, session, principal, study, what="metadata"))


@router.get(
    "/dicomweb/studies/{study}/series/{series}/metadata", summary="WADO-RS: a series' metadata"
)
def series_metadata(
    request: Request, study: str, series: str, session: DbSession, principal: StudyRead
) -> Response:
    found = _readable(request, session, principal, study, series, what="metadata")
    return _metadata(request, found)


@router.get(
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
    summary="WADO-RS: an instance's metadata",
)
def instance_metadata(
    request: Request,
    study: str,
    series: str,
    instance: str,
    session: DbSession,
    principal: StudyRead,
) -> Response:
    found = _readable(request, session, principal, study, series, instance, what="metadata")
    return _metadata(request, found)


def _rendered(
    request: Request,
    session: Session,
    principal: Principal,
    uids: tuple[str, str, str],
    number: int,
) -> Response:
    media = _rendered_type(request)
    found = _readable(request, session, principal, *uids, what="rendered")
    request.state.audit[-1].detail = json.dumps(
        {**json.loads(request.state.audit[-1].detail), "frame": number}, separators=(",", ":")
    )
    ((kept, _series),) = found.instances
    try:
        content, at = _frame_file(request.app.state.storage, kept, number)
    except parts.NoSuchFrame as exc:
        raise NotFound(str(exc)) from None
    return Response(
        decoding.rendered(content, kept.transfer_syntax_uid, at, media), media_type=media
    )


def _frame_file(storage: BlobStorage, kept: Instance, number: int) -> tuple[bytes, int]:
    """What rendering, decoding or encoding frame ``number`` of ``kept`` reads, and that
    frame's number in it: a file of the instance's attributes and that frame alone
    (:func:`.parts.one_frame`, from the blob's segments that hold them); the whole file when
    its pixel data is not cut in frames (none, big endian, bit-packed), which the whole
    file's readers then refuse as before. Raises :class:`.parts.NoSuchFrame`."""
    with storage.reader(kept.blob_key) as reader:
        try:
            return parts.one_frame(parts.open_file(reader), number), 1
        except parts.NotCut:
            pass
    return storage.get(kept.blob_key), number


@router.get(
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/rendered",
    summary="WADO-RS: an instance rendered (its first frame)",
)
def instance_rendered(
    request: Request,
    study: str,
    series: str,
    instance: str,
    session: DbSession,
    principal: StudyRead,
) -> Response:
    return _rendered(request, session, principal, (study, series, instance), 1)


@router.get(
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered",
    summary="WADO-RS: a frame rendered",
)
def frame_rendered(
    request: Request,
    study: str,
    series: str,
    instance: str,
    frame: int,
    session: DbSession,
    principal: StudyRead,
) -> Response:
    return _rendered(request, session, principal, (study, series, instance), frame)


# --- frames (the viewer's pixel data) ----------------------------------------------------------

OCTET = "application/octet-stream"


def _frame_numbers(frames: str) -> list[int]:
    try:
        numbers = [int(n) for n in frames.split(",")]
    except ValueError:
        raise BadRequest(f"frames {frames!r}: a comma-separated list of frame numbers") from None
    if not numbers or min(numbers) < 1:
        raise BadRequest("frame numbers start at 1")
    return numbers


# PS3.18 Table 8.7.3-5: the media types of compressed pixel data, each syntax's first; the
# syntax a media type means when the Accept names no transfer-syntax comes first.
FRAME_MEDIA: dict[str, tuple[str, ...]] = {
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
}


@dataclass(frozen=True)
class FrameAnswer:
    """How the frames go out: the multipart's ``type``, and the ``transfer-syntax`` of each
    part (the stored one, or the one they are decoded or encoded to)."""

    media: str
    syntax: str


def _accepts_frames(request: Request, syntax: str) -> FrameAnswer:
    """The form the frames are given in, the first of the Accept's ranges the archive can
    serve: as stored (``application/octet-stream``; uncompressed ones little endian, compressed
    ones as their fragments), decoded (``transfer-syntax=1.2.840.10008.1.2.1``), or in a
    compressed media type (``image/jls``, ``image/jp2``, ``image/dicom-rle``, ``image/jpeg``,
    ``image/jpx``): as stored when kept in one of its syntaxes, else encoded losslessly in its
    syntax the archive encodes to (:data:`.transcoding.ENCODABLE`; never to a lossy one).
    406 when the caller takes none of those."""
    for found in _accept(request):
        if found.type in ("*/*", "multipart/*") and not found.params:
            return FrameAnswer(OCTET, syntax)
        if found.type != "multipart/related":
            continue
        kind = found.params.get("type", OCTET).lower()
        wanted = found.params.get("transfer-syntax")
        if kind in (OCTET, "*/*") and wanted in (None, "*", syntax):
            return FrameAnswer(OCTET, syntax)
        if kind in (OCTET, "*/*") and wanted == transcoding.EXPLICIT:
            return FrameAnswer(OCTET, transcoding.EXPLICIT)
        if kind not in FRAME_MEDIA:
            continue
        meant = FRAME_MEDIA[kind]
        if wanted in ("*", syntax) and syntax in meant:
            return FrameAnswer(kind, syntax)
        encodable = [s for s in meant if s in transcoding.ENCODABLE]
        if wanted in (None, "*") and encodable:
            return FrameAnswer(kind, encodable[0])
        if wanted in encodable:
            return FrameAnswer(kind, str(wanted))
        if wanted is None and syntax == meant[0]:
            return FrameAnswer(kind, syntax)
    offered = ", ".join(["application/octet-stream", *FRAME_MEDIA])
    raise NotAcceptable(
        f"give Accept: multipart/related; type= one of {offered} (stored in {syntax}): the "
        "frames are returned as stored, decoded (transfer-syntax=1.2.840.10008.1.2.1), or "
        "encoded losslessly (JPEG-LS, JPEG 2000, RLE)"
    )


@router.get(
    "/dicomweb/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
    summary="WADO-RS: retrieve frames (pixel data)",
)
def retrieve_frames(
    request: Request,
    study: str,
    series: str,
    instance: str,
    frames: str,
    session: DbSession,
    principal: StudyRead,
) -> Response:
    """The frames' pixel data as ``multipart/related``, one part a frame, in the form
    :func:`_accepts_frames` picks: as stored, decoded or encoded, each part labelled with its
    media type and transfer syntax."""
    numbers = _frame_numbers(frames)
    found = _readable(request, session, principal, study, series, instance, what="frames")
    entry = request.state.audit[-1]
    entry.detail = json.dumps(
        {**json.loads(entry.detail), "frames": numbers}, separators=(",", ":")
    )
    ((kept, _series),) = found.instances
    stored, storage = kept.transfer_syntax_uid, request.app.state.storage
    answer = _accepts_frames(request, stored)
    try:
        if answer.syntax == stored:  # those frames' bytes alone read from the blob
            with storage.reader(kept.blob_key) as reader:
                cut = parts.frames(parts.open_file(reader), numbers)
        else:  # those frames alone read, then decoded or encoded
            cut = []
            for number in numbers:
                content, at = _frame_file(storage, kept, number)
                cut += decoding.frames(content, stored, [at], answer.syntax)
    except (parts.NoSuchFrame, transcoding.NoSuchFrame) as exc:
        raise NotFound(str(exc)) from None
    except (parts.NotCut, transcoding.CannotTranscode) as exc:
        raise NotAcceptable(str(exc)) from None
    kind = f"{answer.media}; transfer-syntax={answer.syntax}"
    boundary = secrets.token_hex(16)
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + frame + b"\r\n" for frame in cut
    )
    body += f"--{boundary}--\r\n".encode()
    media = f'multipart/related; type="{answer.media}"; boundary={boundary}'
    return Response(body, media_type=media)


# --- QIDO-RS ---------------------------------------------------------------------------------

QIDO_LIMIT = 100
QIDO_MAX = 1000
# Query parameters that are not matching keys (PS3.18 8.3.4).
QIDO_CONTROLS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
# Matching keys whose values are lists: QIDO-RS separates them by "," (or "\"), C-FIND by "\".
LIST_KEYS = frozenset(
    {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "ModalitiesInStudy"}
)
# The attributes returned without includefield (PS3.18 6.7.1.2.2, those the index holds).
RETURNED = {
    "STUDY": (
        "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "PatientName",
        "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyDescription",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    "SERIES": ("Modality", "SeriesDescription", "SeriesNumber", "NumberOfSeriesRelatedInstances"),
    "IMAGE": ("SOPClassUID", "SOPInstanceUID", "InstanceNumber"),
}  # fmt: skip


def _keyword(name: str) -> str:
    """A query parameter's attribute: its keyword, or the keyword of its tag (``0020000D``)."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        keyword = keyword_for_tag(int(name, 16))
        if not keyword:
            raise BadRequest(f"{name} is not the tag of a DICOM attribute")
        return str(keyword)
    return name


@dataclass(frozen=True)
class Qido:
    """A QIDO-RS request: its matching keys (keyword -> value), the further attributes asked
    for (``includefield``), and its page."""

    filters: dict[str, str]
    include: list[str]
    limit: int
    offset: int


def qido_request(request: Request) -> Qido:
    """The request's query, checked: 400 for paging that is not a whole number or an
    ``includefield`` that names no attribute (the keys themselves are checked by
    :mod:`.query`)."""
    filters: dict[str, str] = {}
    include: list[str] = []
    for name, value in request.query_params.multi_items():
        lowered = name.lower()
        if lowered == "includefield":
            include += [_keyword(v.strip()) for v in value.split(",") if v.strip() != "all"]
        elif lowered not in QIDO_CONTROLS:
            keyword = _keyword(name)
            if keyword in LIST_KEYS:
                value = "\\".join(v.strip() for v in value.replace("\\", ",").split(","))
            filters[keyword] = value
    params = request.query_params
    try:
        limit = int(params.get("limit", QIDO_LIMIT))
        offset = int(params.get("offset", 0))
    except ValueError:
        raise BadRequest("limit and offset are whole numbers") from None
    if limit < 1 or offset < 0:
        raise BadRequest("limit must be at least 1 and offset not negative")
    return Qido(filters, include, min(limit, QIDO_MAX), offset)


def _named_patient(request: Request, session: Session, asked: Qido) -> PatientRef | None:
    """The regional patient a search names by PatientID and IssuerOfPatientID (an OID or the
    namespace of a registered domain; no wildcard), when they designate one. The issuer is
    then matched as the OID the archive files it under; for the regional identifier (RRI),
    the patient's studies whatever identifier they were sent with."""
    pid, issuer = asked.filters.get("PatientID"), asked.filters.get("IssuerOfPatientID")
    if not pid or not issuer or any(c in pid + issuer for c in "*?\\"):
        return None
    authority = (
        issuer if _OID.match(issuer) else identity_service.authority_by_namespace(session, issuer)
    )
    if authority is None:
        return None
    config: IdentityConfig = request.app.state.identity_config
    try:
        patient = identity_service.resolve_patient(session, config, authority, pid)
    except (UnknownDomain, UnknownPatient, Conflict):
        return None
    if authority == config.rri_authority:
        del asked.filters["PatientID"], asked.filters["IssuerOfPatientID"]
    else:
        asked.filters["IssuerOfPatientID"] = authority
    return patient


def _named_visible(
    session: Session, who: StudyReader, uids: str, patient: PatientRef | None
) -> tuple[ColumnElement[bool], int]:
    """The studies a search may show: :func:`~enrs.imaging.access.visible_clause` (every study
    for the cell, a client's own, the named patient's with a care relationship), and those it
    names by StudyInstanceUID that the caller may read (each checked by the WADO-RS rule); with
    the number of named studies refused."""
    named, refused = [], 0
    listed = [u for u in uids.split("\\") if u]
    for study in session.scalars(select(Study).where(Study.study_uid.in_(listed))):
        try:
            readable_study(session, who, study)
        except StudyForbidden:
            refused += 1
            continue
        named.append(study.id)
    return or_(visible_clause(session, who, patient), Study.id.in_(named)), refused


def _search(
    request: Request,
    session: Session,
    level: str,
    asked: Qido,
    visible: ColumnElement[bool] | None,
    **scope: str,
) -> Response:
    """Answer a QIDO-RS search at ``level`` through :mod:`.query` (the matching C-FIND
    uses), ``scope`` the UIDs of the path; audited with the patients it shows."""
    _accepts_json(request)
    filters = {**asked.filters, **scope}
    include = [*RETURNED[level], *asked.include]
    try:
        matches = query.find_matches(
            session, level, filters, include=include, limit=asked.limit, offset=asked.offset,
            visible=visible,
        )  # fmt: skip
    except query.QueryError as exc:
        raise BadRequest(str(exc)) from None
    base = _base(request)
    answer: list[dict[str, Any]] = []
    patients: set[int] = set()
    studies: set[str] = set()
    for match in matches:
        ds = match.dataset
        del ds.QueryRetrieveLevel
        url = f"{base}/studies/{ds.StudyInstanceUID}"
        if level != "STUDY":
            url += f"/series/{ds.SeriesInstanceUID}"
        if level == "IMAGE":
            url += f"/instances/{ds.SOPInstanceUID}"
        ds.RetrieveURL = url
        answer.append(ds.to_json_dict())
        patients |= match.patients
        studies.add(str(ds.StudyInstanceUID))
    refs = []
    for patient_id in sorted(patients):
        ref = identity_service.current_patient(session, patient_id)
        if ref is not None:
            refs.append(f"Patient/{ref.rri}")
    entry = request.state.audit[-1]
    if len(set(refs)) == 1:
        entry.patient_ref = refs[0]
    if len(studies) == 1:
        entry.entity_ref = f"ImagingStudy/{next(iter(studies))}"
    detail = json.loads(entry.detail) if entry.detail else {}
    detail.update(search=level.lower(), count=len(answer), patients=sorted(set(refs)))
    _audit(request, **detail)
    return Response(json.dumps(answer, separators=(",", ":")), media_type=DICOM_JSON)


def _base(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}/dicomweb"


def _visible(request: Request, session: Session, principal: Principal, asked: Qido) -> Any:
    """The studies a search across the archive may show (the refused named ones counted in
    the audit record)."""
    who = study_reader(session, principal)
    patient = _named_patient(request, session, asked)
    named = asked.filters.get("StudyInstanceUID", "")
    if not named:
        return visible_clause(session, who, patient)
    visible, refused = _named_visible(session, who, named, patient)
    if refused:
        _audit(request, not_readable=refused)
    return visible


@router.get("/dicomweb/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request, session: DbSession, principal: StudySearch) -> Response:
    """Studies matching the query (:mod:`.query`) among those the caller may see: every study
    for the cell, a client's own STOW-RS studies, and those named by StudyInstanceUID that the
    caller may read (:mod:`.access`); the others are left out, not refused."""
    asked = qido_request(request)
    return _search(request, session, "STUDY", asked, _visible(request, session, principal, asked))


@router.get("/dicomweb/series", summary="QIDO-RS: search for series")
def search_all_series(request: Request, session: DbSession, principal: StudySearch) -> Response:
    asked = qido_request(request)
    visible = _visible(request, session, principal, asked)
    return _search(request, session, "SERIES", asked, visible)


@router.get("/dicomweb/instances", summary="QIDO-RS: search for instances")
def search_all_instances(request: Request, session: DbSession, principal: StudySearch) -> Response:
    asked = qido_request(request)
    visible = _visible(request, session, principal, asked)
    return _search(request, session, "IMAGE", asked, visible)


def _in_study(
    request: Request, session: Session, principal: Principal, study: str, series: str | None
) -> None:
    """A search inside a study: 404 for an unknown study or series, 403 for a study the
    caller may not read (audited with its patient), as WADO-RS."""
    _readable(request, session, principal, study, series, what="search")
    request.state.audit[-1].detail = None


@router.get("/dicomweb/studies/{study}/series", summary="QIDO-RS: a study's series")
def search_series(
    request: Request, study: str, session: DbSession, principal: StudySearch
) -> Response:
    asked = qido_request(request)
    _in_study(request, session, principal, study, None)
    return _search(request, session, "SERIES", asked, None, StudyInstanceUID=study)


@router.get("/dicomweb/studies/{study}/instances", summary="QIDO-RS: a study's instances")
def search_study_instances(
    request: Request, study: str, session: DbSession, principal: StudySearch
) -> Response:
    asked = qido_request(request)
    _in_study(request, session, principal, study, None)
    return _search(request, session, "IMAGE", asked, None, StudyInstanceUID=study)


@router.get(
    "/dicomweb/studies/{study}/series/{series}/instances", summary="QIDO-RS: a series' instances"
)
def search_instances(
    request: Request, study: str, series: str, session: DbSession, principal: StudySearch
) -> Response:
    asked = qido_request(request)
    _in_study(request, session, principal, study, series)
    scope = {"StudyInstanceUID": study, "SeriesInstanceUID": series}
    return _search(request, session, "IMAGE", asked, None, **scope)


# --- STOW-RS -----------------------------------------------------------------------------------


def stow_caller(session: Session, principal: Principal, address: str) -> Caller:
    """Who may store by STOW-RS: an active system client bound to at least one assigning
    authority (by name, or owned by its facility), as an identity feeder is; 403 otherwise.
    Its single authority, if it has one, is the issuer of the PatientIDs it sends without
    one (several: the data sets must name theirs)."""
    if principal.kind != "client":
        raise Forbidden("STOW-RS is for a facility's system client")
    client_id = principal.client_id or principal.subject
    grant = domains.feeder_grant(session, accounts_service.client_grant(session, client_id))
    if grant is None:
        raise Forbidden(f"client {client_id} is not an active system client")
    if not grant.authorities:
        raise Forbidden(
            f"client {client_id} is bound to no assigning authority "
            "(enrs clients create --authority or --finess)"
        )
    authority = next(iter(grant.authorities)) if len(grant.authorities) == 1 else None
    return Caller(client_id, address, True, authority)


def _parts(request: Request, body: bytes) -> list[bytes]:
    """The DICOM files of a ``multipart/related; type="application/dicom"`` body (RFC 2387):
    415 for another media type, 400 for a body that cannot be split."""
    found = _media(request.headers.get("content-type", ""))
    if found.type != "multipart/related" or found.params.get("type", "").lower() != DICOM:
        raise UnsupportedMediaType(f'STOW-RS takes multipart/related; type="{DICOM}"')
    boundary = found.params.get("boundary")
    if not boundary:
        raise BadRequest("the multipart body has no boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise BadRequest("the multipart body has no delimiter")
    files, pos = [], start + len(delimiter)
    while body[pos : pos + 2] != b"--":
        line_end = body.find(b"\r\n", pos)
        end = body.find(b"\r\n" + delimiter, line_end)
        if line_end < 0 or end < 0:
            raise BadRequest("the multipart body is not closed by its final delimiter")
        files.append(_part_content(body[line_end + 2 : end]))
        pos = end + 2 + len(delimiter)
    if not files:
        raise BadRequest("the multipart body has no instance")
    return files


def _part_content(part: bytes) -> bytes:
    if part.startswith(b"\r\n"):
        raw_headers, content = b"", part[2:]
    else:
        raw_headers, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise BadRequest("a part of the multipart body has no header end")
    for line in raw_headers.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type" and _media(value).type != DICOM:
            raise UnsupportedMediaType(f"a part is {value.strip()}, not {DICOM}")
    return content


def _received(content: bytes, caller: Caller) -> Received:
    """The instance a DICOM file delivers, as a C-STORE does: the file meta information's SOP
    class, instance and transfer syntax, the data set's bytes. :class:`Malformed` when the file
    is not a DICOM file (PS3.10) or its meta information cannot be read."""
    if len(content) < 144 or content[128:132] != b"DICM":
        raise Malformed("not a DICOM file (PS3.10: preamble, DICM, file meta information)")
    if content[132:136] != b"\x02\x00\x00\x00":
        raise Malformed("the file meta information does not begin with its group length")
    dataset = dataset_of(content)
    try:
        meta = decode(BytesIO(content[132 : len(content) - len(dataset)]), False, True)
        sop_class, sop_instance = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        syntax = meta.TransferSyntaxUID
    except Exception as exc:
        raise Malformed(f"the file meta information cannot be read: {exc}") from None
    return Received(
        sop_class_uid=str(sop_class).strip(),
        sop_instance_uid=str(sop_instance).strip(),
        transfer_syntax=str(syntax).strip(),
        dataset=dataset,
        calling_aet=caller.aet,
        address=caller.address,
        via="STOW-RS",
    )


def _item(received: Received | None, **extra: Any) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = received.sop_class_uid if received else ""
    item.ReferencedSOPInstanceUID = received.sop_instance_uid if received else ""
    for keyword, value in extra.items():
        setattr(item, keyword, value)
    return item


def _store(
    filing: Filing, received: Received, caller: Caller, study: str | None
) -> tuple[int, Indexed | None]:
    """File one instance: its status, and what it is when it could be read. An instance of
    another study than the one the request names is refused (0xA900) before anything is
    written."""
    try:
        indexed: Indexed | None = read_received(received)
    except (UnreadableDataset, DatasetMismatch):
        indexed = None  # filing refuses it with its own status
    if indexed is not None and study is not None and indexed.study_uid != study:
        problem = f"the instance belongs to study {indexed.study_uid}, not {study}"
        return filing.refuse(received, DOES_NOT_MATCH_SOP_CLASS, problem)[0], indexed
    return filing.store(received, caller)[0], indexed


def stow_rs(
    request: Request, session: Session, principal: Principal, body: bytes, study: str | None
) -> Response:
    """STOW-RS (PS3.18 10.5): the PS3.18 response of each instance's filing."""
    address = request.client.host if request.client else ""
    caller = stow_caller(session, principal, address)
    files = _parts(request, body)
    state = request.app.state
    filing = Filing(state.db, state.storage, state.audit_writer, state.identity_config)
    base = f"{str(request.base_url).rstrip('/')}/dicomweb/studies"
    stored, failed, studies, unreadable = [], [], set(), []
    for content in files:
        try:
            received = _received(content, caller)
        except Malformed as exc:
            failed.append(_item(None, FailureReason=CANNOT_UNDERSTAND))
            unreadable.append(str(exc))
            continue
        status, indexed = _store(filing, received, caller, study)
        if status != SUCCESS or indexed is None:
            failed.append(_item(received, FailureReason=status))
            continue
        studies.add(indexed.study_uid)
        url = (
            f"{base}/{indexed.study_uid}/series/{indexed.series_uid}"
            f"/instances/{received.sop_instance_uid}"
        )
        stored.append(_item(received, RetrieveURL=url))
    answer = Dataset()
    if study is not None or len(studies) == 1:
        answer.RetrieveURL = f"{base}/{study or next(iter(studies))}"
    if stored:
        answer.ReferencedSOPSequence = stored
    if failed:
        answer.FailedSOPSequence = failed
    entry = request.state.audit[-1]
    if len(studies) == 1:
        entry.entity_ref = f"ImagingStudy/{next(iter(studies))}"
    detail: dict[str, Any] = {"stored": len(stored), "failed": len(failed)}
    if unreadable:
        detail["not_dicom_files"] = unreadable
    entry.detail = json.dumps(detail, separators=(",", ":"))
    status = 200 if not failed else 202 if stored else 409
    return Response(
        json.dumps(answer.to_json_dict(), separators=(",", ":")),
        status_code=status,
        media_type=DICOM_JSON,
    )


async def _body(request: Request) -> bytes:
    return await request.body()


Body = Annotated[bytes, Depends(_body)]


@router.post("/dicomweb/studies", summary="STOW-RS: store instances", dependencies=[READS_ONLY])
def stow_rs_studies(
    request: Request, session: DbSession, principal: StudyStore, body: Body
) -> Response:
    return stow_rs(request, session, principal, body, None)


@router.post(
    "/dicomweb/studies/{study}",
    summary="STOW-RS: store instances of a study",
    dependencies=[READS_ONLY],
)
def stow_rs_study(
    request: Request, study: str, session: DbSession, principal: StudyStore, body: Body
) -> Response:
    return stow_rs(request, session, principal, body, study)
