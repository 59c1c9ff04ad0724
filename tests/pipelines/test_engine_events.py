"""The events' checks are remembered for unchanged Parquet files, and only for them."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from features.column_checks import ContractError
from pipelines.engine_events import engine_connection, read_events


def _events(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ids,
            "event_time": pd.date_range("2025-01-01", periods=len(ids), freq="h", tz="UTC"),
            "event_type": "login",
        }
    )


def test_unchanged_files_are_not_checked_again_and_a_changed_file_is(tmp_path):
    source = tmp_path / "events"
    source.mkdir()
    part = source / "part-0.parquet"
    _events(["a", "b", "c"]).to_parquet(part)
    checks = tmp_path / "out" / "checks" / "events.json"

    first = read_events(str(source), None, engine_connection(), checks)
    remembered = json.loads(checks.read_text())
    again = read_events(str(source), None, engine_connection(), checks)

    assert remembered["duplicates"] == 0 and set(remembered["rewrites"]) >= {"entity_id"}
    assert first.duplicates is not None and again.duplicates is not None
    assert again.to_pandas()["entity_id"].tolist() == ["a", "b", "c"]
    # The same file written again with a blank id: a new size or time, checked again.
    _events(["a", " ", "c"]).to_parquet(part)
    stat = part.stat()
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    with pytest.raises(ContractError, match="column 'entity_id' has 1 value that is empty"):
        read_events(str(source), None, engine_connection(), checks)


def test_a_feed_with_duplicates_is_not_remembered(tmp_path):
    source = tmp_path / "events.parquet"
    events = _events(["a", "b"])
    pd.concat([events, events.iloc[:1]], ignore_index=True).to_parquet(source)
    checks = tmp_path / "checks.json"

    read = read_events(str(source), None, engine_connection(), checks)

    assert read.duplicates is not None and read.duplicates.count == 1
    assert len(read.duplicates.sample) == 1
    assert not checks.exists()  # the sample names an entity: nothing is kept on disk
