"""The README's configuration table lists every setting."""

from __future__ import annotations

from pathlib import Path

from enrs.settings import Settings


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    missing = [
        f"ENRS_{n.upper()}" for n in Settings.model_fields if f"`ENRS_{n.upper()}`" not in readme
    ]
    assert missing == []
