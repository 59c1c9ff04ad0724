"""The run context: one settings object and one run date, from the user's words."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.context import RunDateError, build_context, parse_as_of


def test_the_run_date_is_midnight_utc_of_an_iso_day():
    assert parse_as_of("2025-12-01") == pd.Timestamp("2025-12-01", tz="UTC")
    today = parse_as_of(None)
    assert today.tz is not None and today == today.normalize()


@pytest.mark.parametrize("text", ["12/01/2025", "01.12.2025", "2025-13-01", "2025-12-01T05:00"])
def test_an_ambiguous_or_impossible_date_is_refused_with_a_sentence(text):
    with pytest.raises(RunDateError, match="YYYY-MM-DD|not a calendar date"):
        parse_as_of(text)


def test_the_context_reads_the_given_config_and_lets_sources_override_it(tmp_path):
    config = tmp_path / "leadscore.yaml"
    config.write_text(f"output:\n  dir: {tmp_path / 'out'}\nsources:\n  events: a\n")
    ctx = build_context(config, "2025-06-30", {"events": "b", "outcomes": None})
    assert ctx.output_dir == tmp_path / "out"
    assert ctx.settings.sources.events == "b"
    assert ctx.settings.sources.outcomes == "data/outcomes.parquet"
    assert ctx.as_of == pd.Timestamp("2025-06-30", tz="UTC")
    assert ctx.config_path == config


def test_a_run_date_after_the_data_is_refused_but_the_next_day_is_fine():
    from pipelines.context import check_not_future

    latest = pd.Timestamp("2025-11-30 23:10", tz="UTC")
    check_not_future(pd.Timestamp("2025-12-01", tz="UTC"), latest)
    check_not_future(pd.Timestamp("2030-01-01", tz="UTC"), None)
    with pytest.raises(RunDateError, match="latest event is on 2025-11-30.*--allow-future"):
        check_not_future(pd.Timestamp("2025-12-02", tz="UTC"), latest)
