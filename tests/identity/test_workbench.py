"""The identitovigilance workbench: decisions on the cell's queue, undo, and the pages in a
real browser (Playwright + Debian's Chromium) against ``enrs serve``."""

from __future__ import annotations

import html
import subprocess
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, expect
from tests.conftest import Factory
from tests.identity.test_service import CONFIG
from tests.support.live_server import LiveServer, enrs_command, live_server
from tests.support.portal import csrf_of, log_in

from enrs.identity import domains, service, workbench
from enrs.identity.matching.engine import EmbeddedMatcher
from enrs.identity.matching.model import MatchModel
from enrs.identity.models import RegionalPatient
from enrs.identity.schemas import SourceIdentityIn
from enrs.kit.db import Database
from enrs.kit.errors import BadRequest, Conflict
from enrs.portal import identity as portal_identity

MATCHER = EmbeddedMatcher(MatchModel.load())
CHU, CLINIC = "1.2.250.1.71.4.2.2.1", "1.2.250.1.71.4.2.2.2"


def _doubtful_pair(db: Database, died: str = "") -> int:
    """Two identities of one person, the second douteuse (and dead on ``died``, PID-29): a
    potential duplicate task."""
    death = {"v2": {"PID": {"29": died, "30": "Y"}, "segments": []}} if died else None
    common = {
        "birth_name": "LOUIS-JEAN",
        "given_names": ["Mireille"],
        "sex": "F",
        "birth_date": date(1948, 12, 2),
        "birth_place": "97105",
        "postal_code": "97100",
    }
    with db.transaction() as session:
        service.feed(
            session,
            MATCHER,
            SourceIdentityIn(authority=CHU, ipp="10", **common),
            actor="test",
            config=CONFIG,
        )
        result = service.feed(
            session,
            MATCHER,
            SourceIdentityIn(
                authority=CLINIC, ipp="20", attributes=frozenset({"DOUT"}), record=death, **common
            ),
            actor="test",
            config=CONFIG,
        )
    assert result.task == "DUPLICATE" and result.task_id is not None
    return result.task_id


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def test_a_task_between_two_ipps_of_one_facility_says_so(db: Database) -> None:
    doubtful = _doubtful_pair(db)
    with db.transaction() as session:
        assert not workbench.view(session, doubtful).same_facility
        first = SourceIdentityIn(
            authority=CHU,
            ipp="30",
            birth_name="NARCISSE",
            given_names=["Line"],
            sex="F",
            birth_date=date(1950, 3, 3),
        )
        service.feed(session, MATCHER, first, actor="test", config=CONFIG)
        again = first.model_copy(update={"ipp": "31"})
        result = service.feed(session, MATCHER, again, actor="test", config=CONFIG)
        assert result.task == "DUPLICATE" and result.task_id is not None
        assert workbench.view(session, result.task_id).same_facility


def test_link_then_undo(db: Database) -> None:
    task_id = _doubtful_pair(db)
    with db.transaction() as session:
        with pytest.raises(BadRequest):
            workbench.decide(session, task_id, "LINK", reason=" ", actor="cell")
        with pytest.raises(BadRequest):
            workbench.decide(session, task_id, "UNLINK", reason="x", actor="cell")
        done = workbench.decide(session, task_id, "LINK", reason="même personne", actor="cell")
        assert done.source.patient_id == done.task.other_patient_id
        assert workbench.count_open(session) == 0
    with db.transaction() as session:
        with pytest.raises(Conflict):
            workbench.decide(session, task_id, "LINK", reason="again", actor="cell")
        back = workbench.undo(session, task_id, reason="erreur", actor="cell")
        assert back.task.status == "OPEN" and back.source.patient_id != back.task.other_patient_id
        retired = session.get(RegionalPatient, back.source.patient_id)
        assert retired is not None and retired.active


def test_keep_apart_is_not_proposed_again(db: Database) -> None:
    task_id = _doubtful_pair(db)
    with db.transaction() as session:
        view = workbench.decide(session, task_id, "KEEP_APART", reason="homonymes", actor="cell")
        data = SourceIdentityIn(
            authority=CLINIC,
            ipp="20",
            birth_name="LOUIS-JEAN",
            given_names=["Mireille"],
            sex="F",
            birth_date=date(1948, 12, 2),
            birth_place="97105",
            postal_code="97100",
            attributes=frozenset({"DOUT"}),
            address_line="2 rue Schoelcher",
        )
        again = service.feed(session, MATCHER, data, actor="test", config=CONFIG)
        assert again.task is None and view.task.decision == "KEEP_APART"
        # The doubt lifted, the traits would link them automatically: the cell's ruling holds.
        cleared = service.feed(
            session,
            MATCHER,
            data.model_copy(update={"attributes": frozenset()}),
            actor="test",
            config=CONFIG,
        )
        assert cleared.link_method == "UPDATE" and cleared.task is None
        assert cleared.rri == view.source_rri != view.other_rri


@pytest.fixture
def server(tmp_path: Path, database_url: str, db: Database) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url, "PATH": "/usr/bin"}
    subprocess.run(enrs_command("demo", "load"), env=env, check=True, capture_output=True)
    _doubtful_pair(db)
    with live_server(
        data_dir=data_dir, database_url=database_url, extra_env={"ENRS_MLLP_PORT": "0"}
    ) as running:
        yield running


@pytest.mark.browser
def test_cell_decides_in_the_browser(browser: Browser, server: LiveServer) -> None:
    page = browser.new_page()
    page.goto(server.base_url + "/login")
    page.fill("#username", "cellule")
    page.fill("#password", "Cellule-demo-2026!")
    page.click("button[type=submit]")
    page.click("text=Identitovigilance")
    # Each assertion waits for its page: a click that submits a form returns before the next
    # page is there (under load, the old page or an empty one can still be read).
    expect(page.locator("#queue-count")).to_contain_text("1 tâche(s) ouverte(s)")
    page.click("text=Examiner")
    expect(page.locator("h1")).to_contain_text("Doublon potentiel")
    assert page.locator("tr.diff").count() >= 2  # IPP and authority differ, attributes too
    page.check("input[value=LINK]")
    page.fill("#reason", "Même personne : pièce d'identité vérifiée")
    page.click("text=Enregistrer la décision")
    expect(page.locator("body")).to_contain_text("Décision enregistrée")
    decision = page.locator("#decision")
    expect(decision).to_contain_text("Rattachement par Cellule d'identitovigilance")
    page.fill("#undo-reason", "Erreur de manipulation")
    page.click("text=Annuler la décision")
    expect(page.locator("body")).to_contain_text("la tâche est rouverte")
    page.goto(server.base_url + "/identitovigilance")
    expect(page.locator("#queue-count")).to_contain_text("1 tâche(s) ouverte(s)")


def _pair(db: Database, name: str, douteuse_at: str, born: date) -> None:
    """A potential duplicate whose received (douteuse) identity is of ``douteuse_at``."""
    other = CHU if douteuse_at == CLINIC else CLINIC
    common = {"birth_name": name, "given_names": ["Mireille"], "sex": "F",
              "birth_date": born, "birth_place": "97105"}  # fmt: skip
    with db.transaction() as session:
        service.feed(session, MATCHER, SourceIdentityIn(authority=other, ipp=f"{name}-1",
                     **common), actor="test", config=CONFIG)  # fmt: skip
        result = service.feed(
            session,
            MATCHER,
            SourceIdentityIn(
                authority=douteuse_at, ipp=f"{name}-2", attributes=frozenset({"DOUT"}), **common
            ),
            actor="test",
            config=CONFIG,
        )
    assert result.task == "DUPLICATE"


def _cell_client(client: TestClient, factory: Factory) -> None:
    factory.user("ida", roles=("identitovigilance",))
    log_in(client, "ida")


def test_the_queue_in_the_cells_words_with_filters_and_pages(
    client: TestClient, factory: Factory, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.transaction() as session:
        domains.add(session, CONFIG, CLINIC, namespace="CLIPORT", name="Clinique du Port")
    for year, name in enumerate(("LOUIS-JEAN", "BELLAY", "DUCLOS"), start=1948):
        _pair(db, name, douteuse_at=CLINIC, born=date(year, 12, 2))
    _pair(db, "MARTIN", douteuse_at=CHU, born=date(1960, 3, 4))
    _cell_client(client, factory)
    text = html.unescape(client.get("/identitovigilance").text)
    assert "4 tâche(s) ouverte(s)." in text
    assert "Clinique du Port" in text and "02/12/1948" in text
    assert CLINIC not in text.split("<tbody>")[1]  # names, not OIDs, in the table
    assert " %" in text  # a probability, not a raw weight
    clinic = html.unescape(client.get("/identitovigilance", params={"etablissement": CLINIC}).text)
    assert "3 tâche(s) ouverte(s) sur 4." in clinic
    none = client.get("/identitovigilance", params={"type": "COLLISION"}).text
    assert "0 tâche(s) ouverte(s) sur 4." in html.unescape(none)
    later = client.get("/identitovigilance", params={"du": "2999-01-01"}).text
    assert "0 tâche(s) ouverte(s) sur 4." in html.unescape(later)
    assert client.get("/identitovigilance", params={"du": "02/12/2026"}).status_code == 400
    monkeypatch.setattr(portal_identity, "PAGE_SIZE", 3)
    first = html.unescape(client.get("/identitovigilance").text)
    assert "Page 1 / 2" in first and first.count("Examiner") == 3
    assert 'href="/identitovigilance?page=2"' in first and 'rel="prev"' not in first
    second = html.unescape(client.get("/identitovigilance", params={"page": 2}).text)
    assert "Page 2 / 2" in second and second.count("Examiner") == 1 and 'rel="next"' not in second
    filtered = html.unescape(
        client.get("/identitovigilance", params={"etablissement": CLINIC, "page": 1}).text
    )
    assert "Page 1 / 1" in filtered


def test_a_task_explained_and_decided_in_the_cells_words(
    client: TestClient, factory: Factory, db: Database
) -> None:
    with db.transaction() as session:
        domains.add(session, CONFIG, CLINIC, namespace="CLIPORT", name="Clinique du Port")
    task_id = _doubtful_pair(db, died="20240115")
    _cell_client(client, factory)
    page = html.unescape(client.get(f"/identitovigilance/taches/{task_id}").text)
    death_row = page.split("<th>Date de décès</th>")[1].split("</tr>")[0]
    assert death_row.count("15/01/2024") == 1  # the clinic's identity only
    assert "Probabilité qu'il s'agisse de la même personne" in page
    for sentence in ("Nom de naissance identique", "Date de naissance identique", "Même sexe"):
        assert sentence in page
    assert "en faveur" in page and '{"' not in page  # no raw JSON of levels
    assert "02/12/1948" in page and "Clinique du Port" in page and "Féminin" in page
    csrf = csrf_of(page)
    decided = client.post(
        f"/identitovigilance/taches/{task_id}/decision",
        data={"decision": "LINK", "reason": "Pièce d'identité vérifiée", "csrf": csrf},
    )
    assert decided.status_code == 200
    shown = html.unescape(decided.text)
    decision = shown.split('id="decision">')[1].split("</p>")[0]
    assert decision.startswith("<strong>Rattachement</strong> par Ida")
    assert "user:" not in decision
