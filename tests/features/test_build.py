"""build_features and build_snapshots as a whole: the pandas reference, no leakage, the table."""

from __future__ import annotations

import os

import ibis
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.backend import event_types_seen
from features.build import build_features, build_snapshots
from features.pivot import zeros_in_small_pages
from features.reference import build_features_pandas
from features.spec import FeatureSpec, feature_catalog
from features.table import existing_entities, existing_rows, fit_columns
from tests.conftest import AS_OF, make_event_history

DAY = pd.Timedelta(days=1)
CUSTOM_SPEC = FeatureSpec(
    windows_days=(1, 14),
    half_life_days=3.5,
    trend_window_days=7,
    kpi_window_days=30,
    key_features=("f1", "f2", "f4"),
)


@pytest.fixture(scope="module")
def duckdb_con():
    return ibis.duckdb.connect()


def one_entity(as_of, created_days_ago=100.0):
    return pd.DataFrame({"entity_id": ["a"], "created_at": [as_of - created_days_ago * DAY]})


def events_of(*rows):
    """Events of entity ``a`` from ``(event_type, event_time[, value[, item]])`` tuples."""
    rows = [(*row, *(None,) * (4 - len(row))) for row in rows]
    return pd.DataFrame(
        {
            "entity_id": "a",
            "event_time": pd.to_datetime([r[1] for r in rows], utc=True),
            "event_type": [r[0] for r in rows],
            "value": pd.array([r[2] for r in rows], dtype="float64"),
            "item": pd.array([r[3] for r in rows], dtype="str"),
        }
    )


# --- (a) the engine equals the pandas reference ------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_duckdb_equals_the_pandas_reference(seed, event_history, as_of, duckdb_con):
    events, entities = event_history(seed, n_entities=30, n_events=1500, history_days=100)
    expected = build_features_pandas(events, entities, as_of)
    built = build_features(events, entities, as_of, con=duckdb_con)
    pd.testing.assert_frame_equal(built, expected, check_exact=False, rtol=1e-9)
    # The data really exercises the special features, so the comparison means something.
    assert (built["key_features_used_30d"] > 0).any()
    assert (built["login_active_weeks_4w"] > 0).any()
    assert set(built["nps_class"]) >= {"none", "detractor"}
    assert (built["open_tickets"] > 0).any()
    assert built["avg_session_minutes_30d"].notna().any()


def test_a_custom_spec_drives_both_implementations(event_history, as_of, duckdb_con):
    events, entities = event_history(7, n_entities=25, n_events=1500, history_days=60)
    built = build_features(events, entities, as_of, CUSTOM_SPEC, con=duckdb_con)
    expected = build_features_pandas(events, entities, as_of, CUSTOM_SPEC)
    pd.testing.assert_frame_equal(built, expected, check_exact=False, rtol=1e-9)
    assert {"login_count_1d", "login_count_14d", "purchase_amount_30d"} <= set(built.columns)
    assert "login_count_7d" not in built.columns


# --- (b) leakage: nothing at or after the cutoff matters ---------------------------------

NEW_TYPES = ["login", "nps_answer", "ticket_resolved", "purchase", "brand_new_type"]


@st.composite
def future_edits(draw, n_future):
    """Which future events to drop, how to change the rest, and new events to add."""
    drop = draw(st.lists(st.booleans(), min_size=n_future, max_size=n_future))
    change = draw(
        st.lists(
            st.tuples(st.sampled_from(NEW_TYPES), st.floats(0, 10), st.integers(0, 10**12)),
            min_size=n_future,
            max_size=n_future,
        )
    )
    added = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["e000", "e001", "e005", "stranger"]),
                st.sampled_from(NEW_TYPES),
                st.integers(0, 90 * 86_400 * 10**6),  # microseconds at or after the cutoff
                st.one_of(st.none(), st.floats(0, 10)),
            ),
            max_size=12,
        )
    )
    return drop, change, added


HISTORY = None


def leakage_history(event_history):
    global HISTORY  # built once: hypothesis re-runs the test body many times
    if HISTORY is None:
        HISTORY = event_history(11, n_entities=12, n_events=260, history_days=60)
    return HISTORY


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_events_at_or_after_the_cutoff_never_change_the_table(
    data, event_history, as_of, duckdb_con
):
    events, entities = leakage_history(event_history)
    future = events["event_time"] >= as_of
    drop, change, added = data.draw(future_edits(int(future.sum())))
    kept_future = events[future].copy()
    new_type, new_value, shift_us = zip(*change, strict=True) if change else ((), (), ())
    kept_future["event_type"] = list(new_type)
    kept_future["value"] = list(new_value)
    kept_future["event_time"] = kept_future["event_time"] + pd.to_timedelta(shift_us, unit="us")
    kept_future = kept_future[~np.array(drop, dtype=bool)]
    new_events = pd.DataFrame(
        {
            "entity_id": [a[0] for a in added],
            "event_time": [as_of + pd.Timedelta(microseconds=a[2]) for a in added],
            "event_type": [a[1] for a in added],
            "value": pd.array([a[3] for a in added], dtype="float64"),
        }
    ).astype({"event_time": "datetime64[us, UTC]"})
    edited = pd.concat([events[~future], kept_future, new_events], ignore_index=True)
    before = build_features(events, entities, as_of, con=duckdb_con)
    after = build_features(edited, entities, as_of, con=duckdb_con)
    pd.testing.assert_frame_equal(after, before, check_exact=False, rtol=1e-12)


# --- the table's shape and inputs -------------------------------------------------------


def test_columns_rows_and_dtypes_follow_the_contract(event_history, as_of, duckdb_con):
    events, entities = event_history(5)
    table = build_features(events, entities, as_of.tz_localize(None), con=duckdb_con)
    fits = {"industry": "category", "employees": "float64"}
    types = sorted(set(events.loc[events["event_time"] < as_of, "event_type"]))
    catalog = feature_catalog(FeatureSpec(), types, fits)
    assert list(table.columns) == ["entity_id", "as_of", *(d.name for d in catalog)]
    for feature in catalog:
        assert str(table[feature.name].dtype) == feature.dtype, feature.name
    assert (table["as_of"] == as_of).all() and str(table["as_of"].dt.tz) == "UTC"
    eligible = entities[(entities["created_at"] < as_of) & entities["consent"]]
    assert table["entity_id"].tolist() == sorted(eligible["entity_id"])
    assert set(table["industry"].cat.categories) == set(entities["industry"])


def test_given_existing_rows_build_the_same_table_aligned_to_the_entities(
    event_history, as_of, duckdb_con
):
    events, entities = event_history(5)
    entities = entities.sample(frac=1.0, random_state=3).reset_index(drop=True)  # any order
    rows = existing_rows(entities, as_of)
    table = build_features(events, entities, as_of, con=duckdb_con, rows=rows)
    pd.testing.assert_frame_equal(table, build_features(events, entities, as_of, con=duckdb_con))
    assert table["entity_id"].tolist() == entities["entity_id"].iloc[rows].tolist()
    pd.testing.assert_frame_equal(existing_entities(entities, as_of, rows),
                                  existing_entities(entities, as_of))  # fmt: skip


def test_parquet_files_give_the_same_table_as_a_frame(event_history, as_of, tmp_path):
    events, entities = event_history(6)
    folder = tmp_path / "events"
    folder.mkdir()
    events.iloc[:400].to_parquet(folder / "part-0.parquet")
    events.iloc[400:].to_parquet(folder / "part-1.parquet")
    from_frame = build_features(events, entities, as_of)
    pd.testing.assert_frame_equal(build_features(folder, entities, as_of), from_frame)
    pd.testing.assert_frame_equal(
        build_features(str(folder / "*.parquet"), entities, as_of), from_frame
    )


def test_snapshots_stack_one_table_per_cutoff(event_history, as_of, duckdb_con):
    events, entities = event_history(8)
    cutoffs = [as_of - 30 * DAY, as_of, as_of]
    stacked = build_snapshots(events, entities, cutoffs, con=duckdb_con)
    types = event_types_seen(events, as_of)
    for cutoff in (as_of - 30 * DAY, as_of):
        alone = build_features(events, entities, cutoff, con=duckdb_con, event_types=types)
        part = stacked[stacked["as_of"] == cutoff].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, alone)
    assert isinstance(stacked["industry"].dtype, pd.CategoricalDtype)
    assert isinstance(stacked["nps_class"].dtype, pd.CategoricalDtype)


#: Midnights and times of day, out of order and one twice; entities appear in between.
CUTOFFS = [AS_OF - 61 * DAY, AS_OF, (AS_OF - 30 * DAY).floor("D"), AS_OF - 95.3 * DAY, AS_OF]


def history_with_items(seed):
    """A seeded history with items and values on undeclared types and some ended entities."""
    events, entities = make_event_history(seed, n_entities=60, n_events=3000, history_days=200)
    rng = np.random.default_rng(seed)
    generic = events["event_type"].isin(["api_call", "chat message"]).to_numpy()
    items = np.array(["x", "y", "z"])[rng.integers(0, 3, len(events))]
    events["item"] = events["item"].where(~generic, items)
    events.loc[generic & (rng.random(len(events)) < 0.3), "value"] = rng.uniform(0, 9)
    ended = AS_OF - pd.to_timedelta(rng.uniform(0, 100, len(entities)), "D")
    entities["ended_at"] = ended.where(rng.random(len(entities)) < 0.2)
    return events, entities


def one_build_per_cutoff(events, entities, cutoffs, spec, con, event_types=None):
    """The reference of the one-pass build: :func:`build_features` per distinct cutoff."""
    ordered = sorted(set(cutoffs))
    types = event_types or event_types_seen(events, ordered[-1], con=con)
    tables = [build_features(events, entities, c, spec, con=con, event_types=types)
              for c in ordered]  # fmt: skip
    return pd.concat(tables, ignore_index=True)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("spec", [FeatureSpec(), CUSTOM_SPEC], ids=["default", "custom"])
def test_snapshots_in_one_pass_equal_one_build_per_cutoff(seed, spec, duckdb_con):
    events, entities = history_with_items(seed)
    stacked = build_snapshots(events, entities, CUTOFFS, spec, con=duckdb_con)
    expected = one_build_per_cutoff(events, entities, CUTOFFS, spec, duckdb_con)
    pd.testing.assert_frame_equal(stacked, expected, check_exact=True)
    sizes = stacked.groupby("as_of").size()  # entities created between the cutoffs
    assert len(sizes) == 4 and sizes.is_monotonic_increasing and sizes.iloc[0] < sizes.iloc[-1]
    assert (stacked[f"api_call_distinct_items_{spec.windows_days[-1]}d"] > 0).any()
    assert stacked["nps_latest"].notna().any() and (stacked["open_tickets"] > 0).any()


def test_snapshots_of_one_cutoff_and_given_types_from_parquet(duckdb_con, tmp_path):
    events, entities = history_with_items(3)
    alone = build_features(events, entities, AS_OF, con=duckdb_con)
    one = build_snapshots(events, entities, [AS_OF], con=duckdb_con)
    pd.testing.assert_frame_equal(one, alone, check_exact=True)
    events.to_parquet(tmp_path / "events.parquet")
    types = ["api_call", "webhook"]
    stacked = build_snapshots(
        tmp_path / "events.parquet", entities, CUTOFFS, con=duckdb_con, event_types=types
    )
    expected = one_build_per_cutoff(events, entities, CUTOFFS, FeatureSpec(), duckdb_con, types)
    pd.testing.assert_frame_equal(stacked, expected, check_exact=True)
    assert "webhook_count_7d" in stacked and "chat_message_count_7d" not in stacked


def test_missing_columns_are_named(as_of):
    events = events_of(("login", as_of - DAY)).drop(columns=["event_type"])
    with pytest.raises(ValueError, match="event_type"):
        build_features(events, one_entity(as_of), as_of)
    with pytest.raises(ValueError, match="created_at"):
        build_features(events_of(("login", as_of)), pd.DataFrame({"entity_id": ["a"]}), as_of)
    with pytest.raises(ValueError, match="backend"):
        build_features(events_of(("login", as_of)), one_entity(as_of), as_of, backend="polars")


def test_repeated_entities_are_refused(as_of):
    entities = pd.concat([one_entity(as_of)] * 2, ignore_index=True)
    with pytest.raises(ValueError, match="repeats entity_id"):
        build_features(events_of(("login", as_of - DAY)), entities, as_of)


def test_naive_and_nanosecond_parquet_times_are_read_as_utc(as_of, tmp_path):
    events = events_of(("login", as_of - DAY), ("login", as_of - 3 * DAY))
    expected = build_features(events, one_entity(as_of), as_of)
    naive = events.assign(event_time=events["event_time"].dt.tz_localize(None))
    naive.to_parquet(tmp_path / "naive.parquet")
    nanoseconds = events.assign(event_time=events["event_time"].dt.as_unit("ns"))
    nanoseconds.to_parquet(tmp_path / "ns.parquet")
    for name in ("naive.parquet", "ns.parquet"):
        built = build_features(tmp_path / name, one_entity(as_of), as_of)
        pd.testing.assert_frame_equal(built, expected)


def test_text_columns_unique_per_entity_are_not_fit_attributes(caplog):
    n = 200
    entities = pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(n)],
            "created_at": pd.Timestamp("2024-01-01", tz="UTC"),
            "industry": pd.array(["retail", "software"] * (n // 2), dtype="str"),
            "email": pd.array([f"person{i}@example.com" for i in range(n)], dtype="str"),
            "employees": range(n),
        }
    )
    with caplog.at_level("WARNING"):
        columns = fit_columns(entities)
    assert columns == {"industry": "category", "employees": "float64"}
    assert "'email'" in caplog.text


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_output_block_is_zeroed_writable_and_private_to_its_process():
    block = zeros_in_small_pages((2, 3), "int64")
    assert block.flags.writeable and (block == 0).all()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        block[:] = 7
        os._exit(0)
    os.waitpid(child, 0)
    assert (block == 0).all()
    block[1, 2] = 5
    assert block.sum() == 5


def test_record_numbers_are_ids_but_measures_that_happen_to_differ_are_attributes():
    n = 40
    entities = pd.DataFrame(
        {
            "entity_id": [f"e{i}" for i in range(n)],
            "Lead Number": np.arange(660_000, 660_000 - 3 * n, -3),  # X Education's kind
            "AccountID": np.arange(n) * 7.0,
            "employees": np.arange(1, n + 1) * 13,  # all different, but a measure
            "Page Views": np.arange(n) % 5,
        }
    )
    assert fit_columns(entities) == {"employees": "float64", "Page Views": "float64"}
