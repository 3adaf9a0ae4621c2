"""The ROR's pages in a real browser (Playwright driving Debian's Chromium) against ``enrs
serve``: a doctor of the CHU describes a unit and counts its beds, a colleague finds them near
a commune, someone of another structure cannot change them, the regional admin sees the
facility's connections."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from tests.directory.test_import import finess, line, position, structure, write
from tests.support.browser import wait_for_query
from tests.support.live_server import LiveServer, enrs_command, live_server

from enrs.demo import DEMO_FINESS

CHU, CLINIC = finess(1), finess(2)
DR_MARTIN = "10001234565"  # the demo's doctor


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env |= {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url}
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(9, number=DR_MARTIN, site=CHU,
             **{"Nom d'exercice": "MARTIN", "Prénom d'exercice": "Claire"}),
    )  # fmt: skip
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    text = (
        "finess;etalab;95;2024-01-18\n"
        + structure(CHU)
        + structure(CLINIC, rs="CLINIQUE DU LAMENTIN", ligneacheminement="97232 LE LAMENTIN")
        + structure(DEMO_FINESS, rs="CH DE FORT-DE-FRANCE (DEMO)")
        + position(CHU, 708963.33, 1617190.19, "UTM_N20")
        + position(CLINIC, 716963.0, 1623190.0, "UTM_N20")
    )
    structures.write_bytes(text.encode("cp1252"))
    for args in (
        ("demo", "load"),
        ("directory", "import", "--quiet", str(people), str(structures)),
    ):
        subprocess.run(enrs_command(*args), env=env, check=True, capture_output=True, timeout=120)
    with live_server(data_dir=data_dir, database_url=database_url) as running:
        yield running


def log_in(page: Page, server: LiveServer, username: str, password: str) -> None:
    page.goto(server.base_url + "/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(server.base_url + "/")


@pytest.mark.browser
def test_a_doctor_counts_the_beds_of_her_hospital_and_a_colleague_finds_them(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    page = browser.new_page()
    log_in(page, server, "dr.martin", "Medecin-demo-2026!")
    page.goto(server.base_url + f"/annuaire/structure/{CHU}")
    assert "pas encore décrit son offre" in page.locator("#offre ~ p").first.inner_text()
    page.fill("#unite", "Unité neuro-vasculaire")
    page.select_option("#activite", "356")
    page.select_option("#mode", "28")
    page.fill("#installes", "12")
    page.fill("#disponibles", "3")
    page.click("#nouvelle-offre button[type=submit]")
    page.wait_for_url(f"**/annuaire/structure/{CHU}?message=offre*")
    row = page.locator("#offers tbody tr").first.inner_text()
    assert "Unité neuro-vasculaire" in row and "Hospitalisation complète (HC)" in row
    assert page.locator("#offers .available").first.inner_text() == "3"
    form = page.locator("form.capacity").first
    form.locator("input[name=disponibles]").fill("1")
    form.locator("button[type=submit]").click()
    page.wait_for_url(f"**/annuaire/structure/{CHU}?message=lits*")
    assert page.locator("#offers .available").first.inner_text() == "1"
    assert "par Dr Claire Martin" in page.locator("#offers tbody tr").first.inner_text()
    page.screenshot(path=str(tmp_path / "structure.png"), full_page=True)
    # Beds near the clinic's commune: the CHU's, about 10 km away.
    page.goto(server.base_url + "/annuaire/lits")
    page.fill("#commune", "Le Lamentin")
    page.select_option("#rayon", "30")
    page.click("#recherche-lits button[type=submit]")
    wait_for_query(page, commune="Le Lamentin", rayon="30")
    rows = page.locator("#beds tbody tr")
    assert rows.count() == 1
    assert "CHU DE MARTINIQUE" in rows.first.inner_text()
    km = float(rows.first.locator("td").first.inner_text().split()[0])
    assert 8 < km < 12 and rows.first.locator(".available").inner_text() == "1"
    page.select_option("#rayon", "10")
    page.click("#recherche-lits button[type=submit]")
    wait_for_query(page, commune="Le Lamentin", rayon="10")
    assert page.locator("#beds tbody tr").count() == 0
    page.fill("#commune", "Atlantis")
    page.click("#recherche-lits button[type=submit]")
    wait_for_query(page, commune="Atlantis")
    assert page.locator("#no-place").is_visible()


@pytest.mark.browser
def test_another_structure_cannot_change_the_beds_and_the_admin_sees_connections(
    browser: Browser, server: LiveServer
) -> None:
    page = browser.new_page()
    log_in(page, server, "dr.martin", "Medecin-demo-2026!")
    page.goto(server.base_url + f"/annuaire/structure/{CHU}")
    page.fill("#unite", "Réanimation")
    page.click("#nouvelle-offre button[type=submit]")
    page.wait_for_url("**message=offre*")
    # Dr Martin does not practise at the clinic: no form there, and a forged POST is refused.
    page.goto(server.base_url + f"/annuaire/structure/{CLINIC}")
    assert page.locator("form.capacity, #nouvelle-offre").count() == 0
    csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
    assert csrf  # the session's own token: what is refused is the structure, not the form
    refused = page.request.post(
        server.base_url + f"/annuaire/structure/{CLINIC}/offre",
        form={"unite": "X", "champ": "01", "activite": "356", "mode": "28", "csrf": csrf},
    )
    assert refused.status == 403 and "CLINIQUE" not in refused.text()
    page.goto(server.base_url + f"/annuaire/structure/{CLINIC}")
    expect(page.locator("body")).to_contain_text("pas encore décrit son offre")
    # The identitovigilance cell (no structure) sees the beds, not the forms.
    other = browser.new_page()
    log_in(other, server, "cellule", "Cellule-demo-2026!")
    other.goto(server.base_url + f"/annuaire/structure/{CHU}")
    assert "Réanimation" in other.locator("#offers").inner_text()
    assert other.locator("form.capacity").count() == 0
    assert other.locator("#connections").count() == 0
    # The regional admin sees the demo facility's domain, client and HL7 v2 sender.
    admin = browser.new_page()
    log_in(admin, server, "admin", "Admin-demo-2026!")
    admin.goto(server.base_url + f"/annuaire/structure/{DEMO_FINESS}")
    connections = admin.locator("#connections").inner_text()
    assert "Domaine d'identification" in connections
    assert "Client système" in connections and "Émetteur HL7 v2" in connections
