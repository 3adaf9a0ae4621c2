"""``enrs imaging …``: the imaging archive from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from enrs.kit.audit.trail import AuditEntry
from enrs.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from enrs.imaging import correction
    from enrs.imaging.models import StudyCorrection


@click.group()
def imaging() -> None:
    """The regional imaging archive (DICOM)."""


@imaging.group()
def ae() -> None:
    """The DICOM application entities allowed to associate with the archive."""


@ae.command("add")
@click.argument("aet")
@click.option("--host", required=True, help="Host name or address the AE connects from")
@click.option("--port", required=True, type=int, help="The AE's own DICOM port")
@click.option("--store", is_flag=True, help="May store instances (C-STORE)")
@click.option("--retrieve", is_flag=True, help="May query and retrieve (C-FIND, C-GET, C-MOVE)")
@click.option("--authority", help="Registered domain (OID) of its PatientIDs sent without issuer")
def ae_add(
    aet: str, host: str, port: int, store: bool, retrieve: bool, authority: str | None
) -> None:
    """Register the AE AET (or change a registered one): only registered AEs, from their
    host, may associate; only those registered with --store may store, only those registered
    with --retrieve may query and retrieve (C-FIND, C-GET, C-MOVE). A C-MOVE destination must be
    registered: the archive sends to its host and port."""
    from enrs.imaging import service
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction() as session:
            peer = service.add_peer(
                session, aet, host=host, port=port, store=store, retrieve=retrieve,
                authority=authority,
            )  # fmt: skip
            line = _line(peer.aet, peer.host, peer.port, peer.may_store, peer.may_retrieve,
                         peer.authority)  # fmt: skip
    finally:
        db.dispose()
    click.echo(line)


@ae.command("list")
def ae_list() -> None:
    """The registered AEs: title, host, port, rights, authority."""
    from enrs.imaging import service
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction(write=False) as session:
            for p in service.peers(session):
                click.echo(_line(p.aet, p.host, p.port, p.may_store, p.may_retrieve, p.authority))
    finally:
        db.dispose()


@ae.command("remove")
@click.argument("aet")
def ae_remove(aet: str) -> None:
    """Unregister the AE AET: its next associations are rejected."""
    from enrs.imaging import service
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction() as session:
            service.remove_peer(session, aet)
    finally:
        db.dispose()
    click.echo(f"{aet.strip()} removed")


@imaging.group()
def retention() -> None:
    """Storage tiers and the legal retention of the archived studies."""


@retention.command("sweep")
@click.option("--hours", type=float, default=1.0, show_default=True, help="Grace period")
@click.option("--dry-run", is_flag=True, help="Count the orphan blobs only")
def retention_sweep(hours: float, dry_run: bool) -> None:
    """Remove the stored blobs that no archived instance names (left by a process killed
    mid-filing), older than the grace period; each removal audited."""
    from datetime import timedelta

    from enrs.imaging import retention as job
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    db = Database(settings.database_url)
    storage = open_storage(settings)
    try:
        done = job.sweep(db, storage, grace=timedelta(hours=hours), dry_run=dry_run)
    finally:
        storage.close()
        db.dispose()
    click.echo(f"{'would remove' if dry_run else 'removed'} {done.orphans} orphan blob(s)")
    if done.failed:
        raise click.ClickException(f"{done.failed} blob(s) could not be deleted (see the log)")


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="Count what would move or be deleted only")
def retention_run(dry_run: bool) -> None:
    """Move the studies older than ENRS_IMAGING_COLD_AFTER_DAYS to the cold tier, then delete
    those past ENRS_IMAGING_RETENTION_YEARS after the patient's last exam; each study audited.
    Either step is skipped when its setting is 0. Run it daily (cron, systemd timer)."""
    from enrs.imaging import retention as job
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    db = Database(settings.database_url)
    storage = open_storage(settings)
    verb = "would" if dry_run else "did"
    failed = 0
    try:
        if settings.imaging_cold_after_days:
            days = settings.imaging_cold_after_days
            moved = job.move_cold(db, storage, days=days, dry_run=dry_run)
            failed = len(moved.failed)
            click.echo(
                f"cold tier ({verb} move): {moved.instances} instance(s) of {moved.studies} "
                f"study(ies), {moved.bytes} bytes, studies older than {days} day(s)"
            )
        else:
            click.echo("cold tier: disabled (ENRS_IMAGING_COLD_AFTER_DAYS=0)")
        if settings.imaging_retention_years:
            years = settings.imaging_retention_years
            purged = job.purge(db, storage, years=years, dry_run=dry_run)
            click.echo(
                f"retention ({verb} delete): {purged.studies} study(ies), {purged.instances} "
                f"instance(s), last exam of the patient more than {years} year(s) ago"
            )
            if purged.contents_left:
                click.echo(f"{purged.contents_left} blob(s) not deleted (see the log)", err=True)
        else:
            click.echo("retention: disabled (ENRS_IMAGING_RETENTION_YEARS=0)")
        counts = job.tiers(db)
    finally:
        storage.close()
        db.dispose()
    click.echo(f"instances now: {counts.get('warm', 0)} warm, {counts.get('cold', 0)} cold")
    if failed:
        raise click.ClickException(f"{failed} instance(s) could not be moved (see the log)")


def _line(
    aet: str, host: str, port: int, store: bool, retrieve: bool, authority: str | None
) -> str:
    rights = ",".join(r for r, on in (("store", store), ("retrieve", retrieve)) if on) or "echo"
    return f"{aet}\t{host}:{port}\t{rights}\t{authority or '-'}"


# --- the identitovigilance cell's corrections (enrs.imaging.correction) ---------------------------


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _cli_entry(interaction: str, action: str, **fields: str | None) -> AuditEntry:
    return AuditEntry(
        category="dicom",
        interaction=interaction,
        action=action,
        agent_kind="system",
        agent_id=_cli_actor(),
        resource_type="ImagingStudy",
        **fields,  # type: ignore[arg-type]
    )


@imaging.command("commitments")
@click.option("--all", "everything", is_flag=True, help="The delivered reports too")
@click.option("--retry", "retry", type=int, help="Make the failed report ID due again now")
def commitments(everything: bool, retry: int | None) -> None:
    """The Storage Commitment reports not delivered on their request's association: pending
    (retried on a new association) and failed (given up after the retries), with their
    attempts and last error; with --all, the delivered ones too. --retry ID: the report ID
    sent again by the running archive, its attempts counted from zero (audited)."""
    from enrs.imaging import commitment
    from enrs.kit.audit.trail import append_entries
    from enrs.kit.db import Database
    from enrs.kit.errors import EnrsError

    statuses = (commitment.PENDING, commitment.FAILED, commitment.SENT)
    db = Database(Settings().database_url)
    try:
        if retry is not None:
            with db.transaction() as session:
                kept = [commitment.rearm(session, retry)]
                entry = _cli_entry("N-EVENT-REPORT", "U", entity_ref=f"CommitmentReport/{retry}",
                                   detail="retry")  # fmt: skip
                append_entries(session.connection(), [entry])
        else:
            with db.transaction(write=False) as session:
                kept = commitment.listing(session, statuses if everything else statuses[:2])
    except EnrsError as exc:
        raise click.ClickException(exc.message) from exc
    finally:
        db.dispose()
    for k in kept:
        when = k.sent_at if k.status == commitment.SENT else k.next_attempt_at
        label = "sent" if k.status == commitment.SENT else "next"
        click.echo(
            f"{k.id}\t{k.status}\t{k.aet}\t{k.transaction_uid}\tevent {k.event_type}"
            f"\tattempts {k.attempts}\t{label} {when:%Y-%m-%d %H:%M:%S} UTC"
            f"\t{k.last_error or ''}".rstrip()
        )
    if not kept:
        click.echo("no Storage Commitment report waiting or failed")


@imaging.command("studies")
@click.option("--flagged", is_flag=True, help="Only the flagged studies (unknown or conflict)")
@click.option("--status", type=click.Choice(["resolved", "unknown", "conflict"]))
@click.option("--limit", default=50, show_default=True, help="Studies per page")
@click.option("--offset", default=0, show_default=True, help="Studies skipped")
def studies(flagged: bool, status: str | None, limit: int, offset: int) -> None:
    """The archived studies, oldest first: Study UID, status, regional patient, PatientID and
    issuer it is filed under, accession number, study date, and why it is flagged."""
    from enrs.imaging import correction
    from enrs.kit.audit.trail import write_entries
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction(write=False) as session:
            page = correction.studies(
                session, status=status, flagged=flagged, limit=limit, offset=offset
            )
            lines = [_study_line(r) for r in page.rows]
        query = f"flagged={flagged}&status={status or ''}&limit={limit}&offset={offset}"
        write_entries(db, [_cli_entry("search-type", "E", query=query)])
    finally:
        db.dispose()
    for line in lines:
        click.echo(line)
    click.echo(f"{page.total} study(ies)", err=True)


def _study_line(row: correction.StudyRow) -> str:
    s = row.study
    fields = (s.study_uid, s.patient_status, row.patient.rri if row.patient else "-",
              s.source_patient_id or "-", s.source_issuer or "-", s.accession_number or "-",
              s.study_date.isoformat() if s.study_date else "-", s.patient_note or "")  # fmt: skip
    return "\t".join(fields)


@imaging.group()
def study() -> None:
    """One archived study: the cell's corrections and their history."""


@study.command("correct")
@click.argument("study_uid")
@click.option("--patient", help="The regional patient by an identifier: AUTHORITY_OID:ID")
@click.option("--regional-id", help="The regional patient by its regional identifier (RRI)")
@click.option("--accession", help="The corrected accession number")
@click.option("--reason", required=True, help="Why (kept in the study's history)")
def study_correct(
    study_uid: str,
    patient: str | None,
    regional_id: str | None,
    accession: str | None,
    reason: str,
) -> None:
    """Attach the study STUDY_UID to a regional patient and/or correct its accession number.
    The archive's index is corrected and the history kept; the stored instances are not
    changed (retrieval gives out the corrected values)."""
    from enrs.identity.config import IdentityConfig
    from enrs.imaging import correction
    from enrs.kit.audit.trail import append_entries
    from enrs.kit.db import Database

    if patient is None and regional_id is None and accession is None:
        raise click.UsageError("give --patient, --regional-id or --accession")
    settings = Settings()
    db = Database(settings.database_url)
    try:
        with db.transaction() as session:
            done = correction.correct(
                session, IdentityConfig.from_settings(settings), study_uid,
                reason=reason, actor=_cli_actor(),
                patient=correction.parse_patient(patient) if patient is not None else None,
                regional_id=regional_id, accession=accession,
            )  # fmt: skip
            entry = _cli_entry(
                "update", "U", entity_ref=f"ImagingStudy/{done.study.study_uid}",
                patient_ref=f"Patient/{done.after.rri}" if done.after else None,
                detail=correction.audit_detail(done),
            )  # fmt: skip
            append_entries(session.connection(), [entry])
            line = _study_line(correction.StudyRow(done.study, done.after))
    finally:
        db.dispose()
    click.echo(line)


@study.command("history")
@click.argument("study_uid")
def study_history(study_uid: str) -> None:
    """The corrections of the study STUDY_UID, oldest first: when, who, the patient, PatientID,
    issuer, accession number and status before -> after, and why."""
    from enrs.imaging import correction
    from enrs.kit.audit.trail import write_entries
    from enrs.kit.db import Database

    db = Database(Settings().database_url)
    try:
        with db.transaction(write=False) as session:
            row, kept = correction.history(session, study_uid)
            lines = [_study_line(row)] + [_correction_line(session, c) for c in kept]
        entry = _cli_entry(
            "read", "R", entity_ref=f"ImagingStudy/{row.study.study_uid}",
            patient_ref=f"Patient/{row.patient.rri}" if row.patient else None,
        )  # fmt: skip
        write_entries(db, [entry])
    finally:
        db.dispose()
    for line in lines:
        click.echo(line)


@study.command("manifest")
@click.argument("study_uid")
def study_manifest(study_uid: str) -> None:
    """Build the KOS manifest of the study STUDY_UID now (its waiting reports filed first),
    archive it and file it in the document repository for the DMP feed; nothing when its
    manifest lists every instance already."""
    from enrs.identity.config import IdentityConfig
    from enrs.imaging import manifest
    from enrs.imaging import repository as archive
    from enrs.kit.audit.trail import append_entries
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    db = Database(settings.database_url)
    storage, config = open_storage(settings), IdentityConfig.from_settings(settings)
    try:
        with db.transaction() as session:
            found = archive.study(session, study_uid)
            if found is not None:
                manifest.file_reports_of(session, storage, config, settings, found)
            built = manifest.build_manifest(session, storage, config, settings, study_uid)
            if built is not None:
                study_row = archive.study(session, study_uid)
                assert study_row is not None
                patient = manifest.patient_of(session, study_row)
                append_entries(
                    session.connection(), [manifest.manifest_entry(study_row, patient, built)]
                )
    finally:
        db.dispose()
    if built is None:
        click.echo(f"{study_uid}\tmanifest up to date")
    else:
        click.echo(
            f"{study_uid}\tmanifest {built.sop_instance_uid}\t{built.instances} instance(s)"
            f"\tDocumentReference/{built.document_id}"
            + (f"\treplaces DocumentReference/{built.replaces}" if built.replaces else "")
        )


@imaging.group()
def documents() -> None:
    """The archive's reports and KOS manifests in the document repository."""


@documents.command("run")
def documents_run() -> None:
    """One round: file the waiting reports of resolved studies, build the manifests due."""
    from enrs.imaging import manifest
    from enrs.kit.db import Database
    from enrs.kit.storage import open_storage

    settings = Settings()
    db = Database(settings.database_url)
    try:
        done = manifest.run_round(db, open_storage(settings), settings)
    finally:
        db.dispose()
    click.echo(f"reports filed: {done.reports}, manifests: {done.manifests}, failed: {done.failed}")
    if done.failed:
        raise SystemExit(1)


def _correction_line(session: Session, c: StudyCorrection) -> str:
    def ident(pid: str | None, issuer: str | None) -> str:
        return f"{pid or '-'}^{issuer or '-'}"

    return "\t".join(
        (
            c.corrected_at.isoformat(timespec="seconds"),
            c.actor,
            f"patient {_rri(session, c.patient_before)} -> {_rri(session, c.patient_after)}",
            f"PatientID {ident(c.source_patient_id_before, c.source_issuer_before)}"
            f" -> {ident(c.source_patient_id_after, c.source_issuer_after)}",
            f"accession {c.accession_before or '-'} -> {c.accession_after or '-'}",
            f"status {c.status_before} -> {c.status_after}",
            c.reason,
        )
    )


def _rri(session: Session, patient_id: int | None) -> str:
    from enrs.identity import service as identity_service

    found = identity_service.current_patient(session, patient_id) if patient_id else None
    return found.rri if found else "-"


def _register_reading() -> None:
    from enrs.imaging.reading_cli import reading

    imaging.add_command(reading)


_register_reading()
