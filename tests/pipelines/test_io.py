from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features.column_checks import ContractError
from features.mapping import InputMapping, apply_column_map
from features.timeutil import UTC_TIMESTAMP
from pipelines import atomic_files
from pipelines.atomic_files import (
    atomic_path,
    replace_dir_atomic,
    restore_interrupted_dir,
    staging_dir,
    write_parquet_atomic,
    write_text_atomic,
)
from pipelines.database_writes import sql_delete, sql_upsert_tables
from pipelines.databases import SourceNotFoundError, compact_duckdb, sql_read
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


def make_scores(scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": ["00001", "00002", "00003"],
            "as_of": pd.to_datetime(["2025-04-01"] * 3, utc=True),
            "score": scores,
            "band": pd.Categorical(["high", "low", "low"]),
        }
    )


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


# --- atomic files and folders --------------------------------------------------------


def test_failed_parquet_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "scores.parquet"
    write_parquet_atomic(make_scores([1.0, 2.0, 3.0]), path)
    unwritable = pd.DataFrame({"mixed": [1, "two", 3.0]})  # pyarrow cannot type this column

    with pytest.raises(Exception, match="mixed"):
        write_parquet_atomic(unwritable, path)

    assert pd.read_parquet(path)["score"].tolist() == [1.0, 2.0, 3.0]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_exception_mid_write_keeps_old_text(tmp_path):
    path = tmp_path / "board" / "index.html"
    write_text_atomic("<p>old</p>", path)
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as temp:
        temp.write_text("<p>half")
        raise RuntimeError("disk full")
    assert path.read_text() == "<p>old</p>"
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.html"]

    write_text_atomic("<p>new</p>", path)
    assert path.read_text() == "<p>new</p>"


def test_atomic_write_keeps_permissions(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("a\n")
    os.chmod(path, 0o640)
    write_text_atomic("b\n", path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_replace_dir_swaps_folders(tmp_path):
    final = tmp_path / "crm"
    final.mkdir()
    (final / "batch-0001.csv").write_text("old")
    (final / "batch-0002.csv").write_text("stale")
    staging = staging_dir(final)
    (staging / "batch-0001.csv").write_text("new")

    replace_dir_atomic(staging, final)

    assert sorted(p.name for p in final.iterdir()) == ["batch-0001.csv"]
    assert (final / "batch-0001.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crm"]


def test_replace_dir_failure_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "crm"
    final.mkdir()
    (final / "batch-0001.csv").write_text("old")
    staging = staging_dir(final)
    real_rename = os.rename

    def rename_failing_on_the_swap(src, dst):
        if Path(src) == staging:
            raise OSError("injected failure")
        real_rename(src, dst)

    monkeypatch.setattr(atomic_files.os, "rename", rename_failing_on_the_swap)
    with pytest.raises(OSError, match="injected failure"):
        replace_dir_atomic(staging, final)
    assert (final / "batch-0001.csv").read_text() == "old"


def test_a_crash_between_the_renames_is_undone(tmp_path):
    final = tmp_path / "crm"
    backup = tmp_path / ".crm.previous"  # what a run killed mid-swap leaves
    backup.mkdir()
    (backup / "batch-0001.csv").write_text("old")

    assert restore_interrupted_dir(final) is True
    assert (final / "batch-0001.csv").read_text() == "old"
    assert not backup.exists()
    assert restore_interrupted_dir(final) is False


def test_replace_dir_refuses_folders_that_are_not_siblings(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ValueError, match="same folder"):
        replace_dir_atomic(tmp_path / "elsewhere", tmp_path / "out" / "crm")


# --- SQL -----------------------------------------------------------------------------


@pytest.fixture(params=["duckdb", "sqlite"])
def database_url(request, tmp_path) -> str:
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 'scores.duckdb'}"
    return f"sqlite:///{tmp_path / 'scores.db'}"


def sql_upsert(df: pd.DataFrame, url: str, table: str, key: str | list[str]) -> int:
    return sql_upsert_tables(url, [(df, table, key)])[0]


def check_upsert_replaces_rows(url: str) -> None:
    sql_upsert(make_scores([1.0, 2.0, 3.0]), url, "lead_scores", ["entity_id", "as_of"])
    sql_upsert(make_scores([4.0, 5.0, 6.0]), url, "lead_scores", ["entity_id", "as_of"])
    later = make_scores([7.0, 8.0, 9.0]).assign(as_of=pd.Timestamp("2025-04-02", tz="UTC"))
    sql_upsert(later.iloc[:1], url, "lead_scores", ["entity_id", "as_of"])

    table = sql_read(url, "lead_scores").sort_values(["as_of", "entity_id"])
    assert len(table) == 4
    assert table["score"].tolist() == [4.0, 5.0, 6.0, 7.0]
    assert table["band"].tolist() == ["high", "low", "low", "high"]
    assert str(table["as_of"].dt.tz) == "UTC"

    assert sql_delete(url, "lead_scores", "entity_id", ["00001", "99999"]) == 2
    assert sorted(sql_read(url, "lead_scores")["entity_id"]) == ["00002", "00003"]


def test_sql_upsert_twice_gives_no_duplicates(database_url):
    check_upsert_replaces_rows(database_url)


def test_sql_upsert_rejects_bad_keys_and_unknown_columns(database_url):
    rows = make_scores([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"2 rows have a repeated key \(entity_id\)"):
        sql_upsert(rows.assign(entity_id="00001").iloc[:2], database_url, "s", "entity_id")
    with pytest.raises(ValueError, match=r"1 rows have an empty key"):
        sql_upsert(rows.assign(entity_id=["a", None, "c"]), database_url, "s", "entity_id")
    sql_upsert(rows, database_url, "s", "entity_id")
    with pytest.raises(ValueError, match=r"exists without column\(s\) \['reason'\]"):
        sql_upsert(rows.assign(reason="x"), database_url, "s", "entity_id")
    assert sql_read(database_url, "s")["score"].tolist() == [1.0, 2.0, 3.0]


def test_sql_upsert_tables_changes_every_table_or_none(database_url):
    first, second = make_scores([1.0, 2.0, 3.0]), make_scores([4.0, 5.0, 6.0])
    sql_upsert_tables(
        database_url, [(first, "history", "entity_id"), (first, "current", "entity_id")]
    )
    # The second table cannot take a new column: the first one's write is rolled back too.
    with pytest.raises(ValueError, match=r"'current' exists without column\(s\) \['reason'\]"):
        sql_upsert_tables(
            database_url,
            [(second, "history", "entity_id"), (second.assign(reason="x"), "current", "entity_id")],
        )
    for table in ("history", "current"):
        assert sql_read(database_url, table)["score"].tolist() == [1.0, 2.0, 3.0]
    assert sql_upsert_tables(
        database_url, [(second, "history", "entity_id"), (second, "current", "entity_id")]
    ) == [3, 3]
    for table in ("history", "current"):
        assert sql_read(database_url, table)["score"].tolist() == [4.0, 5.0, 6.0]


def test_sql_delete_on_a_missing_table_deletes_nothing(database_url):
    assert sql_delete(database_url, "lead_score_history", "entity_id", ["00001"]) == 0


def test_compacting_a_duckdb_file_under_a_folder_named_like_sql(tmp_path):
    path = tmp_path / "o'; DROP TABLE x; --" / "scores.duckdb"
    url = f"duckdb:///{path}"
    sql_upsert(make_scores([1.0, 2.0, 3.0]), url, "x", "entity_id")
    sql_delete(url, "x", "entity_id", ["00001"])
    compact_duckdb(path)
    assert sorted(sql_read(url, "x")["entity_id"]) == ["00002", "00003"]


# --- PostgreSQL ----------------------------------------------------------------------


@pytest.mark.service
def test_postgres_read_source_and_upsert(postgres_url):
    engine = sa.create_engine(postgres_url)
    make_outcomes().to_sql("crm_outcomes", engine, index=False)
    engine.dispose()
    plain_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")

    outcomes = read_source(f"{plain_url}?table=crm_outcomes", "outcomes")
    assert outcomes["occurred_at"].tolist() == make_outcomes()["occurred_at"].tolist()
    with pytest.raises(SourceNotFoundError, match="'crm_outcomes'"):
        read_source(f"{postgres_url}?table=events", "events")

    check_upsert_replaces_rows(postgres_url)
