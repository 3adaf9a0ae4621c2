"""The region the coordination tests work in (the document repository's: the CHU has the
patient in care, the clinic does not), its doctors logged in to the portal, and a circle."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from enrs.kit.db import Database
from tests.conftest import Factory
from tests.coordination.circles import doctor, make_circle, operation
from tests.documents.world import DOCTOR_AT_CHU, DOCTOR_ELSEWHERE, Region, make_region
from tests.support.portal import log_in


@pytest.fixture
def region(app: FastAPI, client: TestClient, db: Database, tmp_path: Path) -> Region:
    return make_region(app, client, db, tmp_path)


def logged_in(region: Region, factory: Factory, username: str, rpps: str) -> TestClient:
    """A portal session of a new professional account (its cookie kept by the client)."""
    factory.user(username, rpps=rpps)
    browser = TestClient(region.app)
    log_in(browser, username)
    return browser


@pytest.fixture
def chu_doctor(region: Region, factory: Factory) -> TestClient:
    return logged_in(region, factory, "dr.chu", DOCTOR_AT_CHU)


@pytest.fixture
def other_doctor(region: Region, factory: Factory) -> TestClient:
    return logged_in(region, factory, "dr.clinique", DOCTOR_ELSEWHERE)


@pytest.fixture
def circle(
    region: Region, chu_doctor: TestClient, other_doctor: TestClient
) -> tuple[str, TestClient, TestClient]:
    """A circle with the CHU's doctor (its maker) and the clinic's doctor (invited, accepted)."""
    team = make_circle(region, chu_doctor).json()["id"]
    invited = operation(chu_doctor, team, "invite", member=doctor(DOCTOR_ELSEWHERE), role="IDE")
    assert invited.is_success, invited.text
    assert operation(other_doctor, team, "accept").is_success
    return team, chu_doctor, other_doctor
