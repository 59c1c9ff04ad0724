"""Exact duplicate events of a Parquet feed are counted and dropped by the engine."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.settings import Settings
from pipelines.settings_sections import SourceSettings
from pipelines.sources import load_inputs
from tests.pipelines.test_io import make_entities, make_events, make_outcomes


@pytest.mark.parametrize("resent", [0, 3])
def test_duplicates_are_counted_and_dropped_as_pandas_would(tmp_path, resent):
    events = make_events()
    events = pd.concat([events, events.iloc[:resent]], ignore_index=True)
    paths = {name: tmp_path / f"{name}.parquet" for name in ("events", "entities", "outcomes")}
    for path, frame in zip(paths.values(), (events, make_entities(), make_outcomes()), strict=True):
        frame.to_parquet(path)
    settings = Settings(sources=SourceSettings(**{k: str(v) for k, v in paths.items()}))
    inputs = load_inputs(settings, pd.Timestamp("2025-03-30"))

    assert inputs.report.duplicate_events == resent
    assert inputs.report.rejected == {"duplicate_events": resent}
    assert len(inputs.events) == len(events) - resent
    kept = inputs.events.to_pandas().sort_values(["entity_id", "event_time"], ignore_index=True)
    expected = events.drop_duplicates().sort_values(["entity_id", "event_time"], ignore_index=True)
    assert kept["entity_id"].tolist() == expected["entity_id"].tolist()
    times = expected["event_time"].dt.tz_localize("UTC").to_numpy()
    assert (kept["event_time"].to_numpy() == times).all()
    assert len(inputs.report.duplicate_sample) == min(resent, 3)
