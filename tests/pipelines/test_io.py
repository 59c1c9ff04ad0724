"""Reading inputs: files, folders, globs and database tables, column maps, load_inputs."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features.column_checks import ContractError
from features.mapping import InputMapping, apply_column_map
from features.timeutil import UTC_TIMESTAMP
from pipelines.databases import SourceNotFoundError
from pipelines.settings import Settings
from pipelines.settings_sections import SourceSettings
from pipelines.sources import load_inputs, read_source


def make_events(n: int = 20, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.Timestamp("2025-03-01") + pd.to_timedelta(rng.integers(0, 40 * 24, n), unit="h")
    return pd.DataFrame(
        {
            "entity_id": [f"{i:05d}" for i in rng.integers(1, 6, n)],
            "event_time": times,  # naive on purpose: the contract reads it as UTC
            "event_type": rng.choice(["login", "page_view", "session"], n),
            "value": rng.uniform(0, 30, n).round(1),
        }
    )


def make_entities() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": [f"{i:05d}" for i in range(1, 6)],
            "created_at": pd.to_datetime(["2025-01-01"] * 5, utc=True),
            "consent": [True, True, False, True, True],
            "industry": ["saas", "retail", "saas", "bank", "saas"],
        }
    )


def make_outcomes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ["00001", "00004"],
            "outcome": ["converted", "churned"],
            "occurred_at": pd.to_datetime(["2025-03-20", "2025-03-25"], utc=True),
        }
    )


def split(frame: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    return [frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


# --- reading -------------------------------------------------------------------------


def test_csv_with_mapped_columns_keeps_leading_zeros_and_reads_naive_times_as_utc(tmp_path):
    raw = make_events().rename(columns={"entity_id": "Contact ID", "event_time": "ts"})
    raw.to_csv(tmp_path / "events.csv", index=False)

    events = read_source(
        str(tmp_path / "events.csv"),
        "events",
        InputMapping(columns={"Contact ID": "entity_id", "ts": "event_time"}),
    )

    expected = make_events()
    assert events["entity_id"].tolist() == expected["entity_id"].tolist()
    assert events["event_time"].dtype == UTC_TIMESTAMP
    assert (events["event_time"].dt.tz_localize(None) == expected["event_time"]).all()


def test_parquet_folder_reads_every_part_and_hive_keys(tmp_path):
    events = make_events()
    folder = tmp_path / "events"
    for day, part in enumerate(split(events, 3)):
        (folder / f"day={day}").mkdir(parents=True)
        part.to_parquet(folder / f"day={day}" / "part-0.parquet")
    (folder / "_SUCCESS").write_text("")

    read = read_source(str(folder), "events")

    assert len(read) == len(events)
    assert sorted(read["day"].unique()) == ["0", "1", "2"]
    assert sorted(read["value"]) == sorted(events["value"])


def test_csv_folder_and_glob_read_all_parts(tmp_path):
    events = make_events()
    for number, part in enumerate(split(events, 4)):
        part.to_csv(tmp_path / f"part-{number}.csv", index=False)

    from_folder = read_source(str(tmp_path), "events")
    from_glob = read_source(str(tmp_path / "part-[0-1].csv"), "events")

    assert len(from_folder) == len(events)
    assert len(from_glob) == sum(len(part) for part in split(events, 4)[:2])


def test_duckdb_and_sqlite_tables_are_read_by_url(tmp_path):
    database = tmp_path / "crm.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.register("frame", make_entities())
        connection.execute("CREATE TABLE accounts AS SELECT * FROM frame")
    sqlite_file = tmp_path / "crm.db"
    engine = sa.create_engine(f"sqlite:///{sqlite_file}")
    make_outcomes().to_sql("results", engine, index=False)
    engine.dispose()

    entities = read_source(f"duckdb:///{database}?table=accounts", "entities")
    outcomes = read_source(f"sqlite:///{sqlite_file}?table=results", "outcomes")

    assert entities["entity_id"].tolist() == make_entities()["entity_id"].tolist()
    assert entities["consent"].tolist() == [True, True, False, True, True]
    assert outcomes["occurred_at"].tolist() == make_outcomes()["occurred_at"].tolist()


def test_missing_sources_say_what_was_looked_for(tmp_path):
    with pytest.raises(SourceNotFoundError, match=r"The events source .*nowhere.* does not exist"):
        read_source(str(tmp_path / "nowhere"), "events")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceNotFoundError, match=r"The events folder .*empty holds no Parquet"):
        read_source(str(tmp_path / "empty"), "events")
    with pytest.raises(SourceNotFoundError, match=r"glob .* matches no Parquet or CSV file"):
        read_source(str(tmp_path / "*.parquet"), "events")
    with pytest.raises(SourceNotFoundError, match=r"DuckDB database .*none.duckdb does not exist"):
        read_source(f"duckdb:///{tmp_path / 'none.duckdb'}?table=events", "events")

    database = tmp_path / "crm.duckdb"
    with duckdb.connect(str(database)) as connection:
        connection.execute("CREATE TABLE accounts (entity_id VARCHAR)")
    with pytest.raises(SourceNotFoundError) as excinfo:
        read_source(f"duckdb:///{database}?table=events", "events")
    assert str(excinfo.value) == (
        f"Table 'events' does not exist in {database}; the tables there are 'accounts'."
    )


def test_unreadable_files_and_missing_sqlite_databases_are_named(tmp_path):
    broken = tmp_path / "events" / "part-1.parquet"
    broken.parent.mkdir()
    make_events().to_parquet(tmp_path / "events" / "part-0.parquet")
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match=rf"Could not read the events file {broken}: "):
        read_source(str(tmp_path / "events"), "events")
    with pytest.raises(SourceNotFoundError, match=r"SQLite database .*none.db does not exist"):
        read_source(f"sqlite:///{tmp_path / 'none.db'}?table=events", "events")
    assert not (tmp_path / "none.db").exists()


def test_contract_errors_name_the_source_path(tmp_path):
    path = tmp_path / "events.csv"
    make_events().assign(event_time="soon").to_csv(path, index=False)
    with pytest.raises(ContractError, match=rf"^events \({path}\): column 'event_time' has 20"):
        read_source(str(path), "events")


def test_column_map_typos_and_collisions_are_explained():
    frame = make_events()
    with pytest.raises(ContractError) as excinfo:
        apply_column_map(frame, {"when": "created_at"}, "entities", "e.csv")
    assert "column_map names column 'when' (for 'created_at'), which does not exist" in str(
        excinfo.value
    )
    with pytest.raises(ContractError, match="a column 'entity_id' already exists"):
        apply_column_map(frame.assign(contact=1), {"contact": "entity_id"}, "events", "e.csv")
    # A map shared by exports that already use the contract name is fine.
    assert apply_column_map(frame, {"ts": "event_time"}, "events", "e.csv") is frame


def test_load_inputs_validates_and_reports_duplicates_and_future_events(tmp_path):
    events = make_events()
    events = pd.concat([events, events.iloc[:3]], ignore_index=True)  # a re-sent batch
    events.to_parquet(tmp_path / "events.parquet")
    make_entities().to_csv(tmp_path / "entities.csv", index=False)
    make_outcomes().to_parquet(tmp_path / "outcomes.parquet")
    settings = Settings(
        sources=SourceSettings(
            events=str(tmp_path / "events.parquet"),
            entities=str(tmp_path / "entities.csv"),
            outcomes=str(tmp_path / "outcomes.parquet"),
        )
    )
    as_of = pd.Timestamp("2025-03-30")

    inputs = load_inputs(settings, as_of)

    future = int((make_events()["event_time"] > as_of).sum())
    assert future > 0
    report = inputs.report
    assert (report.events, report.entities, report.outcomes) == (len(events), 5, 2)
    assert report.duplicate_events == 3
    assert report.future_events == future + int((events.iloc[:3]["event_time"] > as_of).sum())
    assert report.rejected == {"duplicate_events": 3}
    assert len(inputs.events) == len(events) - 3
    assert inputs.entities["consent"].tolist() == [True, True, False, True, True]
    assert report.entities_without_consent == 1


def test_load_inputs_without_outcomes_when_not_required(tmp_path):
    make_events().to_parquet(tmp_path / "events.parquet")
    make_entities().to_parquet(tmp_path / "entities.parquet")
    settings = Settings(
        sources=SourceSettings(
            events=str(tmp_path / "events.parquet"),
            entities=str(tmp_path / "entities.parquet"),
            outcomes=str(tmp_path / "missing.parquet"),
        )
    )
    with pytest.raises(SourceNotFoundError):
        load_inputs(settings, "2025-04-01")
    inputs = load_inputs(settings, "2025-04-01", outcomes_required=False)
    assert inputs.outcomes.empty
    assert list(inputs.outcomes.columns) == ["entity_id", "outcome", "occurred_at"]
