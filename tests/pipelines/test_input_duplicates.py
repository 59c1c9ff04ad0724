"""Exact duplicate events are looked for once per run, however many there are."""

from __future__ import annotations

import pandas as pd
import pytest

import features.input_report as input_report_module
from pipelines.settings import Settings
from pipelines.settings_sections import SourceSettings
from pipelines.sources import load_inputs
from tests.pipelines.test_io import make_entities, make_events, make_outcomes


@pytest.mark.parametrize("resent", [0, 3])
def test_duplicates_are_searched_once_and_reported_as_before(tmp_path, monkeypatch, resent):
    events = make_events()
    events = pd.concat([events, events.iloc[:resent]], ignore_index=True)
    paths = {name: tmp_path / f"{name}.parquet" for name in ("events", "entities", "outcomes")}
    for path, frame in zip(paths.values(), (events, make_entities(), make_outcomes()), strict=True):
        frame.to_parquet(path)
    settings = Settings(sources=SourceSettings(**{k: str(v) for k, v in paths.items()}))
    searched = []
    original = input_report_module.exact_duplicates

    def counting(frame):
        searched.append(len(frame))
        return original(frame)

    monkeypatch.setattr(input_report_module, "exact_duplicates", counting)
    inputs = load_inputs(settings, pd.Timestamp("2025-03-30"))

    assert inputs.report.duplicate_events == resent
    assert inputs.report.rejected == {"duplicate_events": resent}
    assert len(inputs.events) == len(events) - resent
    assert searched.count(len(events)) == (2 if resent else 1)
