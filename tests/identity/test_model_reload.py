"""A model file given by ENRS_IDENTITY_MODEL is followed: a new version is picked up without
a restart, a broken file is refused and the model in use kept."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from enrs.identity.matching.compare import Traits
from enrs.identity.matching.engine import EmbeddedMatcher, ReloadingMatcher, matcher_for
from enrs.identity.matching.model import DEFAULT_MODEL, MatchModel


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, data: dict[str, Any], stamp: int) -> None:
    path.write_text(json.dumps(data))
    os.utime(path, ns=(stamp, stamp))  # distinct modification times, whatever the clock


def test_a_new_version_is_used_after_the_check_interval(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_MODEL.read_text())
    path = tmp_path / "model.json"
    _write(path, {**data, "version": "v1"}, 1_000_000_000)
    clock = Clock()
    matcher = ReloadingMatcher(path, check_every=5, clock=clock)
    assert matcher.model.version == "v1"

    _write(
        path, {**data, "version": "v2", "thresholds": {"auto_link": 30, "review": 12}}, 2 * 10**9
    )
    clock.now = 4.9
    assert matcher.model.version == "v1"  # not looked at yet
    clock.now = 5.0
    assert matcher.model.version == "v2" and matcher.model.auto_link == 30


def test_a_broken_file_keeps_the_model_in_use(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_MODEL.read_text())
    path = tmp_path / "model.json"
    _write(path, {**data, "version": "v1"}, 10**9)
    matcher = ReloadingMatcher(path, check_every=0)
    path.write_text("{not json")
    os.utime(path, ns=(2 * 10**9, 2 * 10**9))
    assert matcher.refresh() is False and matcher.model.version == "v1"
    bad = {**data, "version": "v3", "thresholds": {"auto_link": 10, "review": 20}}
    _write(path, bad, 3 * 10**9)
    assert matcher.refresh() is False and matcher.model.version == "v1"
    _write(path, {**data, "version": "v4"}, 4 * 10**9)
    assert matcher.refresh() is True and matcher.model.version == "v4"


def test_scores_follow_the_reloaded_weights(tmp_path: Path) -> None:
    data = json.loads(DEFAULT_MODEL.read_text())
    path = tmp_path / "model.json"
    _write(path, data, 10**9)
    matcher = ReloadingMatcher(path, check_every=0)
    a = Traits("JOSEPH", "", ("MARIE",), date(1961, 4, 9), "F", "97209", "97200")
    before = matcher.score(a, a).weight
    for comp in data["comparisons"]:
        if comp["name"] == "birth_place":
            comp["levels"][0]["u"] = 0.5  # the same birth place now worth little
    _write(path, {**data, "version": "cheap-place"}, 2 * 10**9)
    assert matcher.model.version == "cheap-place"
    assert matcher.score(a, a).weight < before


def test_without_a_file_the_built_in_model_is_used() -> None:
    assert isinstance(matcher_for(None), EmbeddedMatcher)


def test_the_probability_is_the_models_calibration() -> None:
    """The built-in model carries a calibration (bench/identity_calibration.py): a probable
    match at the review threshold is no longer scored as certain as an auto-link one; without
    a calibration the probability is the Fellegi-Sunter posterior with a prior of 1/2."""
    model = MatchModel.load()
    review, auto = model.probability(model.review), model.probability(model.auto_link)
    assert 0.3 < review < 0.8 < auto < 0.99 < model.probability(40)
    assert round(review, 6) != round(auto, 6)  # what $match returns as search.score
    data = json.loads(DEFAULT_MODEL.read_text())
    del data["calibration"]
    plain = MatchModel.from_dict(data)
    assert abs(plain.probability(3.0) - 1 / (1 + 2**-3)) < 1e-12
    data["calibration"] = {"slope": -1, "intercept": 0}
    with pytest.raises(ValueError, match="slope"):
        MatchModel.from_dict(data)
