"""The engine paths change nothing but speed: Parquet, CSV and SQL events against pandas.

Issue 17 moves the events into the engine: Parquet sources are read and checked by
DuckDB where they lie, CSV files are parsed by DuckDB and SQL tables copied in batches
into Parquet staged for the engine, and ``sources.csv_reader: pandas`` keeps
the reference path (pandas reads the file and hands it to the engine). The same
generated history, with a few exact duplicates, events after the run date and events
of an entity nobody knows, is written as Parquet, as CSV and as a DuckDB table;
``leadscore nightly --config FILE`` runs the first night (both models trained) on the
Parquet feed and on the CSV feed read by pandas, each with its own output folder and
MLflow store, and ``leadscore features`` on the CSV feed read by the engine and on the
DuckDB table. The feature tables, the scores (probabilities within 1e-9, bands and
reasons for every entity) and the input counts of the run summaries are the same.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
import yaml

from features.synthetic import source_paths
from models.scoring import MODEL_SOURCE

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-12-01"
#: Rows added to the generated events so that no count the summaries compare is zero.
DUPLICATES, FUTURE, UNKNOWN = 7, 4, 3
TOLERANCE = 1e-9
REASON_COLUMNS = ("reasons_up", "reasons_down", "reasons_text")


def with_column(table: pa.Table, name: str, values: list) -> pa.Table:
    """``table`` with column ``name`` replaced by ``values`` (of the column's type)."""
    position = table.schema.get_field_index(name)
    return table.set_column(position, name, pa.array(values, table.schema.field(name).type))


def with_odd_rows(events: pa.Table) -> pa.Table:
    """The events with exact duplicates, events after the run date and unknown entities."""
    picked = events.take(np.linspace(0, events.num_rows - 1, DUPLICATES).astype(int))
    times = [datetime(2026, 2, 1, hour, tzinfo=UTC) for hour in range(FUTURE)]
    later = with_column(events.slice(0, FUTURE), "event_time", times)
    strangers = with_column(
        events.slice(events.num_rows - UNKNOWN), "entity_id", ["nobody-knows-me"] * UNKNOWN
    )
    return pa.concat_tables([events, picked, later, strangers])


@pytest.fixture(scope="module")
def both_feeds(workspace, tmp_path_factory) -> dict[str, Path]:
    """The workspace's history as Parquet files (two) and one CSV file; a config per reader."""
    root = tmp_path_factory.mktemp("engine-inputs")
    # Arrow tables throughout: Arrow writes ISO 8601 times and round-trip floats to CSV,
    # ten times faster than pandas' to_csv.
    events = with_odd_rows(pq.read_table(source_paths(workspace.data)["events"]))
    parquet = root / "parquet-events"
    parquet.mkdir()
    half = events.num_rows // 2
    pq.write_table(events.slice(0, half), parquet / "part-0.parquet")
    pq.write_table(events.slice(half), parquet / "part-1.parquet")
    csv = root / "events.csv"
    pa_csv.write_csv(events, csv)
    configs = {}
    base = yaml.safe_load(workspace.config.read_text())
    table = root / "crm.duckdb"
    with duckdb.connect(str(table)) as connection:
        connection.register("events", events)
        connection.execute("CREATE TABLE web_activity AS SELECT * FROM events")
    feeds = {
        "parquet": (parquet, "engine"),
        "csv": (csv, "pandas"),
        "csv-engine": (csv, "engine"),
        "sql-engine": (f"duckdb:///{table}?table=web_activity", "engine"),
    }
    for name, (source, reader) in feeds.items():
        sources = {**base["sources"], "events": str(source), "csv_reader": reader}
        settings = {**base, "sources": sources}
        settings["output"] = {"dir": str(root / name / "out")}
        configs[name] = root / name / "leadscore.yaml"
        configs[name].parent.mkdir()
        configs[name].write_text(yaml.safe_dump(settings))
    return configs


@pytest.fixture(scope="module")
def first_nights(workspace, both_feeds, tmp_path_factory) -> dict[str, Path]:
    """The output folder of each feed's feature table and first night (both models trained)."""
    outs = {}
    for name, config in both_feeds.items():
        cwd = tmp_path_factory.mktemp(f"run-{name}")
        commands = ("features",) if name.endswith("-engine") else ("features", "nightly")
        for command in commands:
            workspace.run(cwd, command, "--as-of", AS_OF, "--config", str(config),
                          with_config=False)  # fmt: skip
        outs[name] = Path(yaml.safe_load(config.read_text())["output"]["dir"])
    return outs


def summary(out: Path) -> dict:
    return json.loads((out / "summaries" / f"{AS_OF}.json").read_text())


def by_entity(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("entity_id", kind="stable").reset_index(drop=True)


def test_both_paths_train_both_models_and_count_the_same_inputs(first_nights):
    engine, reference = summary(first_nights["parquet"]), summary(first_nights["csv"])
    for name, run in (("parquet", engine), ("csv", reference)):
        # "v1, validated by ...": a model trained and promoted that night, not the rules.
        assert sorted(run["champions"]) == ["churn", "conversion"], name
        assert all(v.startswith("v1") for v in run["champions"].values()), (name, run)
    assert engine["inputs"] == reference["inputs"]
    counts = engine["inputs"]
    assert counts["duplicate_events"] >= DUPLICATES
    assert counts["future_events"] >= FUTURE
    assert counts["events_of_unknown_entities"] >= UNKNOWN
    assert counts["events"] > 0


@pytest.mark.parametrize("engine_feed", ["parquet", "csv-engine", "sql-engine"])
def test_the_engine_paths_save_the_reference_feature_table(first_nights, engine_feed):
    name = f"as_of={AS_OF}.parquet"
    engine = by_entity(pd.read_parquet(first_nights[engine_feed] / "features" / name))
    reference = by_entity(pd.read_parquet(first_nights["csv"] / "features" / name))
    assert list(engine.columns) == list(reference.columns)
    assert len(engine) == len(reference) > 0
    pd.testing.assert_frame_equal(engine, reference, check_exact=False, rtol=0, atol=TOLERANCE)


def test_both_paths_score_every_entity_alike(first_nights):
    def scores(out: Path) -> pd.DataFrame:
        return by_entity(pd.read_parquet(out / "scores" / f"as_of={AS_OF}" / "part-0.parquet"))

    engine, reference = scores(first_nights["parquet"]), scores(first_nights["csv"])
    assert engine["entity_id"].tolist() == reference["entity_id"].tolist()
    assert (engine["score_source"] == MODEL_SOURCE).any()
    for column in ("conversion_probability", "churn_probability"):
        np.testing.assert_allclose(engine[column], reference[column], rtol=0, atol=TOLERANCE,
                                   equal_nan=True, err_msg=column)  # fmt: skip
    for column in ("status", "band", "score_source", *REASON_COLUMNS):
        pd.testing.assert_series_equal(engine[column], reference[column])
