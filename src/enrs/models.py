"""Imports every table module so that ``Base.metadata`` is complete (for Alembic)."""

from enrs.accounts import models as accounts_models
from enrs.coordination import agenda_models as coordination_agenda_models
from enrs.coordination import chat_models as coordination_chat_models
from enrs.coordination import form_models as coordination_form_models
from enrs.coordination import models as coordination_models
from enrs.coordination import notify_models as coordination_notify_models
from enrs.coordination import plan_models as coordination_plan_models
from enrs.coordination import task_models as coordination_task_models
from enrs.directory import models as directory_models
from enrs.documents import models as document_models
from enrs.identity import models as identity_models
from enrs.imaging import models as imaging_models
from enrs.imaging import reading_models as imaging_reading_models
from enrs.imaging import report_models as imaging_report_models
from enrs.imaging import share_models as imaging_share_models
from enrs.kit import events as kit_events
from enrs.kit.audit import models as audit_models
from enrs.kit.db import Base
from enrs.kit.outbound import models as outbound_models
from enrs.messaging import models as messaging_models

__all__ = [
    "Base",
    "accounts_models",
    "audit_models",
    "coordination_agenda_models",
    "coordination_chat_models",
    "coordination_form_models",
    "coordination_models",
    "coordination_notify_models",
    "coordination_plan_models",
    "coordination_task_models",
    "directory_models",
    "document_models",
    "identity_models",
    "imaging_models",
    "imaging_reading_models",
    "imaging_report_models",
    "imaging_share_models",
    "kit_events",
    "messaging_models",
    "outbound_models",
]
