"""The directory's pages in a real browser (Playwright driving Debian's Chromium) against
``enrs serve``, after ``enrs directory import`` of a small extraction and FINESS file."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from tests.directory.test_import import (
    MAILBOX_COLUMNS,
    finess,
    line,
    person,
    position,
    ps_file,
    structure,
    write,
)
from tests.support.browser import wait_for_query
from tests.support.live_server import LiveServer, enrs_command, live_server

CHU = finess(1)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[LiveServer]:
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENRS_")}
    env |= {"ENRS_DATA_DIR": str(data_dir), "ENRS_DATABASE_URL": database_url}
    people = write(
        tmp_path / "PS_LibreAcces_Personne_activite_202612010000.txt",
        line(1, **{"Nom d'exercice": "HÉLÈNE", "Prénom d'exercice": "Anne"}),
        line(1, site=CHU, **{"Code mode exercice": "S", "Libellé mode exercice": "Salarié"}),
        line(2, **{"Nom d'exercice": "HÉBERT", "Code profession": "60",
                   "Libellé profession": "Infirmier"}),
    )  # fmt: skip
    structures = tmp_path / "etalab-cs1100507-stock-20240118-0336.csv"
    text = "finess;etalab;95;2024-01-18\n" + structure(CHU)
    structures.write_bytes(
        (text + position(CHU, 708963.33, 1617190.19, "UTM_N20")).encode("cp1252")
    )
    boxes = ps_file(
        tmp_path / "Extraction_Correspondance_MSSante_202612010000.txt",
        MAILBOX_COLUMNS,
        person(1) | {"Type de BAL": "PER", "Adresse BAL": "anne.helene@medecin.mssante.fr"},
    )
    files = (str(people), str(structures), str(boxes))
    for args in (("demo", "load"), ("directory", "import", "--quiet", *files)):
        subprocess.run(enrs_command(*args), env=env, check=True, capture_output=True, timeout=120)
    with live_server(data_dir=data_dir, database_url=database_url) as running:
        yield running


@pytest.mark.browser
def test_a_professional_finds_a_colleague_and_her_hospital(
    browser: Browser, server: LiveServer, tmp_path: Path
) -> None:
    page = browser.new_page()
    page.goto(server.base_url + "/login")
    page.fill("#username", "dr.martin")
    page.fill("#password", "Medecin-demo-2026!")
    page.click("button[type=submit]")
    page.wait_for_url(server.base_url + "/")
    page.click(".services >> text=Annuaire")
    page.wait_for_url("**/annuaire")
    page.fill("#nom", "he")  # without the accent, both HÉLÈNE and HÉBERT
    page.click("#recherche button[type=submit]")
    wait_for_query(page, nom="he")
    assert page.locator("#results tbody tr").count() == 2
    page.select_option("#profession", "10")
    page.fill("#commune", "fort")
    page.click("#recherche button[type=submit]")
    wait_for_query(page, nom="he", profession="10", commune="fort")
    rows = page.locator("#results tbody tr")
    assert rows.count() == 1 and "Médecin" in rows.first.inner_text()
    page.screenshot(path=str(tmp_path / "annuaire.png"), full_page=True)
    page.click("#results >> text=Anne HÉLÈNE")
    page.wait_for_url("**/annuaire/ps/8*")
    assert page.locator("h1").inner_text() == "Docteur Anne HÉLÈNE"
    assert page.locator(".activities li").count() == 2
    assert "anne.helene@medecin.mssante.fr" in page.locator("#mailboxes").inner_text()
    page.click(".activities >> text=CHU DE MARTINIQUE")
    page.wait_for_url(f"**/annuaire/structure/{CHU}")
    assert "97200 FORT DE FRANCE" in page.locator("#structure").inner_text()
    assert page.locator("#staff tr").all_inner_texts()[0].startswith("Docteur Anne HÉLÈNE")
    page.goto(server.base_url + "/annuaire/ps/899999999999")
    expect(page.locator("body")).to_contain_text("aucun professionnel")
