from __future__ import annotations

import pandas as pd
import pytest

from features.build import build_features, build_snapshots

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark_con(spark_session):
    import ibis

    return ibis.pyspark.connect(spark_session)


def test_spark_and_duckdb_build_identical_tables(event_history, as_of, spark_con):
    events, entities = event_history(21, n_entities=30, n_events=1500, history_days=100)
    on_duckdb = build_features(events, entities, as_of)
    on_spark = build_features(events, entities, as_of, backend="pyspark", con=spark_con)
    # Integers, categories and NaN positions must match exactly; floats may differ only
    # by the order in which the engines add them up.
    pd.testing.assert_frame_equal(on_spark, on_duckdb, check_exact=False, rtol=1e-12)
    assert (on_spark["login_active_weeks_4w"] > 0).any()
    assert (on_spark["key_features_used_30d"] > 0).any()


def test_spark_reads_parquet_and_builds_snapshots(event_history, as_of, spark_con, tmp_path):
    events, entities = event_history(22, n_entities=20, n_events=600)
    events.to_parquet(tmp_path / "events.parquet")
    cutoffs = [as_of - pd.Timedelta(days=20), as_of]
    on_duckdb = build_snapshots(tmp_path / "events.parquet", entities, cutoffs)
    on_spark = build_snapshots(
        str(tmp_path / "events.parquet"), entities, cutoffs, backend="pyspark", con=spark_con
    )
    pd.testing.assert_frame_equal(on_spark, on_duckdb, check_exact=False, rtol=1e-12)
