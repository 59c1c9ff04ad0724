"""Features from daily roll-ups equal features from the whole event table (issue 17 item 5)."""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest

from features import rollup, rollup_window
from features.backend import events_table
from features.build import build_features
from features.spec import FeatureSpec
from tests.features.test_payload_features import with_payload

DAY = pd.Timedelta(days=1)
#: Midnight cutoffs: roll-ups are exact there.
FIRST = pd.Timestamp("2025-03-10", tz="UTC")
CUSTOM = FeatureSpec(
    windows_days=(1, 14),
    half_life_days=3.5,
    trend_window_days=7,
    kpi_window_days=30,
    key_features=("f1", "f2", "f4"),
)


def history(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events up to a week after :data:`FIRST`, with values and items on an undeclared
    type, events on day boundaries and logins exactly 28 days before a cutoff."""
    events, entities = with_payload(
        seed, n_entities=40, n_events=4000, as_of=FIRST + 7 * DAY, history_days=120
    )
    ids = entities["entity_id"].iloc[:5].tolist()
    edges = pd.DataFrame(
        {
            "entity_id": ids * 3,
            "event_time": [FIRST - 28 * DAY] * 5 + [FIRST + DAY] * 5 + [FIRST - DAY] * 5,
            "event_type": ["login"] * 5 + ["nps_answer"] * 5 + ["login"] * 5,
            "value": [np.nan] * 5 + [3.0] * 5 + [np.nan] * 5,
            "item": pd.array([None] * 15, dtype="str"),
        }
    )
    edges["event_time"] = edges["event_time"].astype(events["event_time"].dtype)
    return pd.concat([events, edges], ignore_index=True), entities


def rolled(con, table, start, end, spec):
    """The roll-up tables of the events in [start, end), fetched (as a store keeps them)."""
    rows = rollup.events_between(table, start, end, "duckdb")
    return tuple(ibis.memtable(con.to_pyarrow(t)) for t in rollup.rollups_of(rows, spec))


def fetched(con, tables):
    return tuple(ibis.memtable(con.to_pyarrow(t)) for t in tables)


def state_at(con, daily, as_of, spec):
    """The window state as of ``as_of`` from the ``daily`` roll-up, fetched."""
    return ibis.memtable(con.to_pyarrow(rollup_window.window_state(daily, as_of, spec)))


@pytest.mark.parametrize(("seed", "spec"), [(0, FeatureSpec()), (1, FeatureSpec()), (2, CUSTOM)])
def test_features_from_rollups_equal_the_full_read_day_after_day(seed, spec):
    events, entities = history(seed)
    con = ibis.duckdb.connect()
    table = events_table(con, events)
    # The first night rolls up everything before its cutoff, each later night one day;
    # the window state moves with the days entering and leaving its windows.
    tables = rolled(con, table, None, FIRST, spec)
    full_daily = tables[0].to_pyarrow()
    state = state_at(con, tables[0], FIRST, spec)
    types = sorted(set(events["event_type"]))
    for night in range(5):
        as_of = FIRST + night * DAY
        if night:
            tables = rollup.merged(tables, rolled(con, table, as_of - DAY, as_of, spec))
            moved = rollup_window.advanced(state, tables[0], as_of - DAY, as_of, spec)
            state = ibis.memtable(con.to_pyarrow(moved))
            daily = rollup.compacted(tables[0], rollup.compaction_day(as_of, spec), spec)
            tables = fetched(con, (daily, *tables[1:]))
            assert len(tables[0].to_pyarrow()) < len(full_daily)  # old days were merged
        expected = build_features(events, entities, as_of, spec, con=con, event_types=types)
        got = rollup.build_features(con, (state, *tables[1:]), entities, as_of, spec, types)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9, atol=1e-12)
    # The data exercises what the roll-ups must carry.
    assert (got["chat_message_distinct_items_90d" if spec.windows_days[-1] == 90 else
                "chat_message_distinct_items_14d"] > 0).any()  # fmt: skip
    assert (got["login_active_weeks_4w"] > 0).any()
    assert got["nps_class"].nunique() > 1
    assert (got["key_features_used_30d"] > 0).any()


@pytest.mark.parametrize("gap_days", [0, 3, 29, 45, 200])
def test_the_window_state_moves_over_any_gap_as_a_full_read(gap_days):
    """Days enter and leave every window, day bits shift out, weights rescale."""
    events, entities = history(6)
    con = ibis.duckdb.connect()
    table = events_table(con, events)
    spec = FeatureSpec()
    as_of = FIRST
    since = as_of - gap_days * DAY
    daily = ibis.memtable(con.to_pyarrow(rollup.daily_rows(
        rollup.events_between(table, None, as_of, "duckdb"), spec)))  # fmt: skip
    moved = rollup_window.advanced(state_at(con, daily, since, spec), daily, since, as_of, spec)
    state = con.to_pyarrow(moved).to_pandas()
    direct = con.to_pyarrow(rollup_window.window_state(daily, as_of, spec)).to_pandas()
    key = ["entity_id", "event_type"]
    state, direct = (f.sort_values(key).reset_index(drop=True) for f in (state, direct))
    pd.testing.assert_frame_equal(state, direct, check_exact=False, rtol=1e-9, atol=1e-12)
    counts = [c for c in state.columns if c.startswith(("n_", "vn_"))] + ["day_bits"]
    pd.testing.assert_frame_equal(state[counts], direct[counts])  # counts and bits exactly
    assert (state["n_7"] < state["n_all"]).any() and (state["day_bits"] > 0).any()


def test_a_window_state_does_not_move_back():
    con = ibis.duckdb.connect()
    events, _ = history(7)
    daily = rollup.daily_rows(rollup.events_between(events_table(con, events), None, FIRST,
                                                     "duckdb"), FeatureSpec())  # fmt: skip
    state = rollup_window.window_state(daily, FIRST, FeatureSpec())
    with pytest.raises(ValueError, match="forward"):
        rollup_window.advanced(state, daily, FIRST, FIRST - DAY, FeatureSpec())


def test_an_earlier_cutoff_reads_only_the_days_before_it():
    events, entities = history(3)
    con = ibis.duckdb.connect()
    table = events_table(con, events)
    spec = FeatureSpec()
    tables = rolled(con, table, None, FIRST, spec)
    types = sorted(set(events["event_type"]))
    earlier = FIRST - 3 * DAY
    state = state_at(con, tables[0], earlier, spec)
    got = rollup.build_features(
        con, (state, tables[1].filter(tables[1].last_us < 0), tables[2]), entities, earlier,
        spec, types,
    )  # fmt: skip
    expected = build_features(events, entities, earlier, spec, con=con, event_types=types)
    counted = [c for c in got.columns if c.endswith(("_7d", "_30d", "_90d")) and "items" not in c
               and "key_features" not in c]  # fmt: skip
    pd.testing.assert_frame_equal(got[counted], expected[counted], check_exact=False, rtol=1e-9)


def test_a_cutoff_off_midnight_is_refused():
    events, entities = history(4)
    con = ibis.duckdb.connect()
    tables = rolled(con, events_table(con, events), None, FIRST, FeatureSpec())
    state = state_at(con, tables[0], FIRST, FeatureSpec())
    with pytest.raises(ValueError, match="midnight"):
        rollup.build_features(
            con, (state, *tables[1:]), entities, FIRST + pd.Timedelta(hours=9), FeatureSpec(),
            ["login"],
        )  # fmt: skip


# --- the store of pipelines/rollups.py: plan, stage, commit ---------------------------------


def store_run(out, events, as_of, spec=FeatureSpec(), key="k", oldest=None, max_parts=None):  # noqa: B008
    """One run's roll-ups (without committing them) and the features from them."""
    from pipelines import rollups

    con = events.con
    kept = events if oldest is None else events.since(oldest)
    tables, report = rollups.prepare(out, kept, as_of, spec, key, {}, oldest, max_parts)
    if tables is None:
        return None, report
    types = rollups.types_seen(con, tables[0])
    return rollup.build_features(con, tables, ENTITIES, as_of, spec, types), report


EVENTS, ENTITIES = history(5)
TYPES = sorted(set(EVENTS["event_type"]))


def full_read(as_of, events=EVENTS, spec=FeatureSpec()):  # noqa: B008
    return build_features(events, ENTITIES, as_of, spec, event_types=TYPES)


def count(start, end):
    times = EVENTS["event_time"]
    return int(((times < end) & ((times >= start) if start is not None else True)).sum())


def test_the_store_adds_one_day_and_a_failed_run_keeps_the_last_good_rollups(tmp_path):
    from features.event_table import EventTable
    from pipelines import rollups

    events = EventTable.from_frame(EVENTS, ibis.duckdb.connect())
    got, report = store_run(tmp_path, events, FIRST)
    assert (report.mode, report.events_read) == ("rebuilt", count(None, FIRST))
    assert report.reason == "no roll-ups yet"
    pd.testing.assert_frame_equal(got, full_read(FIRST), check_exact=False, rtol=1e-9)
    assert rollups.current(tmp_path / "rollups") is None  # nothing in force before commit
    rollups.commit(report)
    first = (tmp_path / "rollups" / "CURRENT").read_text()

    # The next day reads one day; a run that fails before its commit changes nothing ...
    nxt = FIRST + DAY
    got, report = store_run(tmp_path, events, nxt)
    assert (report.mode, report.events_read) == ("incremental", count(FIRST, nxt))
    pd.testing.assert_frame_equal(got, full_read(nxt), check_exact=False, rtol=1e-9)
    assert (tmp_path / "rollups" / "CURRENT").read_text() == first
    # ... so the run after it reads the same day again, and commits.
    got, report = store_run(tmp_path, events, nxt)
    assert (report.mode, report.events_read) == ("incremental", count(FIRST, nxt))
    rollups.commit(report)
    assert (tmp_path / "rollups" / "CURRENT").read_text() != first
    assert [p.name for p in (tmp_path / "rollups").iterdir() if p.name.startswith("gen-")] == [
        (tmp_path / "rollups" / "CURRENT").read_text()
    ]

    # Two days later: both days, one query.
    later = nxt + 2 * DAY
    got, report = store_run(tmp_path, events, later)
    assert (report.mode, report.events_read) == ("incremental", count(nxt, later))
    pd.testing.assert_frame_equal(got, full_read(later), check_exact=False, rtol=1e-9)

    rollups.commit(report)
    folder = tmp_path / "rollups" / (tmp_path / "rollups" / "CURRENT").read_text()
    days = pd.read_parquet(folder / "daily")["day"]
    # The rebuild merged the days older than every window: one row per (entity, type),
    # dated the day before the window; later runs added their days.
    assert days.min() == rollup.compaction_day(FIRST, FeatureSpec()) - 1
    assert (days == days.min()).sum() < (EVENTS["event_time"] < FIRST - 90 * DAY).sum()
    assert days.max() == rollup.day_of(later) - 1

    # A date before the roll-ups' end reads the events in full and leaves them alone.
    got, report = store_run(tmp_path, events, FIRST)
    assert got is None and report.mode == "full read"


def test_changed_past_events_or_settings_rebuild_the_rollups(tmp_path):
    from features.event_table import EventTable
    from pipelines import rollups

    con = ibis.duckdb.connect()
    _, report = store_run(tmp_path, EventTable.from_frame(EVENTS, con), FIRST)
    rollups.commit(report)
    fewer = EventTable.from_frame(EVENTS.drop(index=EVENTS["event_time"].idxmin()), con)
    _, report = store_run(tmp_path, fewer, FIRST + DAY)
    assert report.mode == "rebuilt" and "counted" in report.reason
    _, report = store_run(tmp_path, EventTable.from_frame(EVENTS, con), FIRST + DAY, key="other")
    assert report.mode == "rebuilt" and "changed" in report.reason


def test_retention_leaves_out_the_days_it_purges(tmp_path):
    from features.event_table import EventTable
    from pipelines import rollups

    events = EventTable.from_frame(EVENTS, ibis.duckdb.connect())
    for night in range(3):
        as_of = FIRST + night * DAY
        oldest = as_of - 40 * DAY
        got, report = store_run(tmp_path, events, as_of, oldest=oldest)
        kept = EVENTS[EVENTS["event_time"] >= oldest]
        pd.testing.assert_frame_equal(got, full_read(as_of, kept), check_exact=False, rtol=1e-9)
        rollups.commit(report)
    daily = pd.read_parquet(tmp_path / "rollups" / (tmp_path / "rollups" / "CURRENT").read_text()
                            / "daily")  # fmt: skip
    assert daily["day"].min() >= rollup.day_of(FIRST + 2 * DAY - 40 * DAY)


def test_parts_beyond_the_window_are_merged_again(tmp_path):
    from features.event_table import EventTable
    from pipelines import rollups

    events = EventTable.from_frame(EVENTS, ibis.duckdb.connect())
    for night in range(4):
        as_of = FIRST + night * DAY
        got, report = store_run(tmp_path, events, as_of, max_parts=2)
        pd.testing.assert_frame_equal(got, full_read(as_of), check_exact=False, rtol=1e-9)
        assert report.events_read == count(None if night == 0 else as_of - DAY, as_of)
        rollups.commit(report)
    folder = tmp_path / "rollups" / (tmp_path / "rollups" / "CURRENT").read_text()
    parts = sorted(p.name for p in (folder / "daily").iterdir())
    assert parts == [
        f"merged-{(FIRST + 2 * DAY).date()}.parquet",
        f"through={as_of.date()}.parquet",
    ]
    days = pd.read_parquet(folder / "daily")["day"]
    assert days.min() == rollup.compaction_day(FIRST + 2 * DAY, FeatureSpec()) - 1


def test_daily_parts_are_written_in_day_order(tmp_path):
    """Each part in day order: a night's read of the days leaving a window skips the rest."""
    import pyarrow.parquet as pq

    from features.event_table import EventTable
    from pipelines import rollups

    # The events shuffled: the order of the parts must not follow the input's.
    shuffled = EVENTS.sample(frac=1.0, random_state=3).reset_index(drop=True)
    events = EventTable.from_frame(shuffled, ibis.duckdb.connect())
    for night in range(4):  # a rebuild, nightly parts, and a merge of them (max_parts=2)
        _, report = store_run(tmp_path, events, FIRST + night * DAY, max_parts=2)
        rollups.commit(report)
        folder = tmp_path / "rollups" / (tmp_path / "rollups" / "CURRENT").read_text()
        for part in (folder / "daily").iterdir():
            days = pq.read_table(part, columns=["day"])["day"].to_numpy()
            assert len(days) and (np.diff(days) >= 0).all(), part.name
