"""The score step's reader of the previous reason texts reads them ahead, in turn."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.steps import _column_reader


def test_columns_read_ahead_are_the_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "entity_id": ["a", "b", "c"],
            "reasons_up": ["u1", None, "u3"],
            "reasons_down": ["d1", "d2", None],
            "reasons_text": ["t1", "t2", "t3"],
        }
    )
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    read = _column_reader(path)
    assert read is not None
    for name in ("reasons_up", "reasons_down", "reasons_text", "entity_id"):
        expected = pq.read_table(path, columns=[name]).to_pandas()[name]
        pd.testing.assert_series_equal(read(name), expected)
    again = read("reasons_up")  # out of turn: read on demand
    assert again.iloc[0] == "u1" and again.isna().tolist() == [False, True, False]
    assert read("absent") is None
    assert _column_reader(None) is None


def test_a_partition_without_the_texts(tmp_path: Path) -> None:
    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"entity_id": ["a"], "reasons_text": ["t"]}), path)
    read = _column_reader(path)
    assert read is not None
    assert read("reasons_up") is None
    assert read("reasons_text").tolist() == ["t"]
