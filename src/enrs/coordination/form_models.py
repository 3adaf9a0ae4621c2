"""The evaluation forms' table (issue 15): ``coordination_form_response``, one FHIR
``QuestionnaireResponse`` — a grid (EPICES, Katz ADL…) filled in for a patient by a member of
one of the patient's care circles.

The questionnaires themselves are data shipped with the code (``questionnaires/*.json``,
:mod:`enrs.coordination.forms`); a response names one by id and version. ``answers`` is the
JSON object ``{linkId: value}`` of the validated answers (a choice's code, or the scalar);
``score_hundredths`` the score the server computed, in hundredths (``5384`` is 53.84), none
for a grid without a score. ``author_*`` is who filled it in (the audit trail's key of the
reader, their name and RPPS); ``version`` rises with each amendment (``If-Match``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from enrs.kit.db import Base, UTCDateTime, utcnow


class FormResponse(Base):
    """An evaluation grid filled in for a patient."""

    __tablename__ = "coordination_form_response"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_id: Mapped[str] = mapped_column(String(64), unique=True)
    questionnaire: Mapped[str] = mapped_column(String(64), index=True)
    questionnaire_version: Mapped[str] = mapped_column(String(16))
    # The regional patient it was filled in for; after a merge, found through the surviving
    # patient (``identity_service.merged_patient_ids``).
    patient_id: Mapped[int] = mapped_column(Integer, index=True)
    status: Mapped[str] = mapped_column(String(16), default="completed")  # completed, amended
    answers: Mapped[str] = mapped_column(Text)  # JSON object {linkId: value}
    score_hundredths: Mapped[int | None] = mapped_column(Integer)
    author_key: Mapped[str] = mapped_column(String(256))
    author_display: Mapped[str] = mapped_column(String(256))
    author_rpps: Mapped[str | None] = mapped_column(String(16))
    authored_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)
