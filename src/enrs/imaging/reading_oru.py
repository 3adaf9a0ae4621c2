"""The signed report of a reading request sent back to the requesting site as an HL7 v2.5
``ORU^R01`` over MLLP, through the platform's outbound queue (:mod:`enrs.kit.outbound`: one
queue per destination, retried, the ACK checked, each message audited).

A site registers its endpoint (``enrs imaging reading site add FINESS --mllp HOST:PORT``: an
outbound destination whose selector is ``{"service": "imaging", "finess": …}``). When a
request is done, :mod:`enrs.imaging.reading` emits :data:`DONE_EVENT`; :class:`ReadingRenderer`
makes one ``ORU^R01`` for the destinations of the requesting site only:

- PID-3: the PatientID the study was sent with, in its issuer (the site's own identifier,
  when its modality sent it), then the regional identifier (``ENRS^PI``); PID-5 the study's
  patient name;
- OBR: the request (placer order number), the accession number (filler), the study
  (universal service: its description), the time of the study, the result status ``F``, the
  last signer as principal result interpreter (OBR-32);
- one ``OBX`` of type TX per line of the report filed in the patient's record (LOINC
  18748-4), result status ``F``.

What we emit is strict (house habit 11): every value is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from enrs.identity import service as identity_service
from enrs.imaging import reading_repository as repository
from enrs.imaging.reading_models import SIGNED
from enrs.kit.events import Event
from enrs.kit.outbound import queue
from enrs.kit.outbound.queue import Destination, Outgoing
from enrs.messaging.mdm import escape

SERVICE = "imaging"
DONE_EVENT = "imaging.reading.done"
HL7_CONTENT = "application/hl7-v2"


@dataclass(frozen=True)
class Report:
    """What every destination's ORU needs, read once per event."""

    finess: str
    request_id: str
    rri: str
    source_patient_id: str | None
    source_issuer: str | None
    patient_name: str
    accession: str
    description: str
    study_date: str
    completed: datetime
    signer_rpps: str
    signer_name: str
    lines: list[str]


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


class ReadingRenderer:
    """The reading service's :class:`~enrs.kit.outbound.queue.Renderer`."""

    names: tuple[str, ...] = (DONE_EVENT,)

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def prepare(self, session: Session, event: Event) -> Report | None:
        from enrs.imaging import reading  # reading emits the event this renders

        asked = repository.request(session, str(event.payload.get("request", "")))
        if asked is None or asked.completed_at is None:
            return None
        patient = identity_service.current_patient(session, asked.patient_id)
        if patient is None:
            return None
        study = repository.study_by_id(session, asked.study_id)
        signed = [r for r in repository.readings(session, asked.id) if r.state == SIGNED]
        last = max(signed, key=lambda r: r.signed_at or asked.completed_at)  # type: ignore[arg-type,return-value]
        return Report(
            finess=asked.requesting_finess,
            request_id=asked.resource_id,
            rri=patient.rri,
            source_patient_id=study.source_patient_id,
            source_issuer=study.source_issuer,
            patient_name=study.patient_name or "",
            accession=study.accession_number or "",
            description=study.study_description or "Imagerie",
            study_date=study.study_date.strftime("%Y%m%d") if study.study_date else "",
            completed=asked.completed_at,
            signer_rpps=last.reader_rpps or "",
            signer_name=last.reader_name or "",
            lines=reading.report_text(session, asked, self.zone).splitlines(),
        )

    def render(
        self, prepared: Any, destination: Destination, control_prefix: str
    ) -> list[Outgoing]:
        report: Report = prepared
        if destination.selector.get("finess") != report.finess:
            return []  # only the requesting site gets its report
        body = build_oru(
            report,
            control_id=f"{control_prefix}.1",
            application=str(destination.selector.get("application") or ""),
            facility=str(destination.selector.get("facility") or report.finess),
        )
        return [Outgoing(f"ORU^R01 ServiceRequest/{report.request_id}", body, HL7_CONTENT,
                         f"Patient/{report.rri}")]  # fmt: skip


def build_oru(report: Report, *, control_id: str, application: str, facility: str) -> str:
    """The ``ORU^R01`` (segments separated by CR) of a done reading request."""
    e = escape
    family, _, rest = report.patient_name.partition("^")
    given = rest.split("^")[0]
    ids = []
    if report.source_patient_id:
        ids.append(f"{e(report.source_patient_id)}^^^{e(report.source_issuer or '')}^PI")
    ids.append(f"{e(report.rri)}^^^ENRS^PI")
    segments = [
        f"MSH|^~\\&|ENRS|ENRS|{e(application)}|{e(facility)}|{_ts(report.completed)}||"
        f"ORU^R01^ORU_R01|{e(control_id)}|P|2.5|||AL|NE||UNICODE UTF-8",
        f"PID|1||{'~'.join(ids)}||{e(family)}^{e(given)}^^^^^L",
        _obr(report),
    ]
    segments += [
        f"OBX|{n}|TX|18748-4^CR d'imagerie médicale^LN|1|{e(line)}||||||F"
        for n, line in enumerate(report.lines, start=1)
    ]
    return "\r".join(segments) + "\r"


def _obr(report: Report) -> str:
    """OBR: placer (2), filler (3), universal service (4), observation time (7), results
    time (22), result status (25), principal result interpreter (32)."""
    e = escape
    fields = [""] * 33
    fields[0], fields[1] = "OBR", "1"
    fields[2] = f"{e(report.request_id)}^ENRS"
    fields[3] = e(report.accession)
    fields[4] = f"{e(report.description)}^{e(report.description)}"
    fields[7] = report.study_date
    fields[22] = _ts(report.completed)
    fields[25] = "F"
    fields[32] = f"{e(report.signer_rpps)}&{e(report.signer_name)}"
    return "|".join(fields)


def add_site(
    session: Session,
    finess: str,
    *,
    endpoint: str,
    application: str = "",
    facility: str = "",
) -> Destination:
    """Register the MLLP endpoint (HOST:PORT) of a requesting site: its done requests' reports
    go there as ORU^R01. 400 for a bad FINESS or endpoint, 409 when the site has one."""
    from enrs.imaging.reading import check_finess

    site = check_finess(finess)
    selector = {"service": SERVICE, "finess": site, "application": application,
                "facility": facility or site}  # fmt: skip
    return queue.add_destination(
        session, name=f"lecture-{site}", transport="mllp", endpoint=endpoint, selector=selector
    )
