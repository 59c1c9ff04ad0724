"""Reading the previous scores reads only what the next run uses, whatever the partition holds."""

from __future__ import annotations

from datetime import date

import pandas as pd

from pipelines.outputs import PARTITION_FILE, PREVIOUS_COLUMNS, read_previous_scores


def test_previous_scores_hold_the_columns_a_run_reads_that_the_partition_has(tmp_path):
    folder = tmp_path / "scores" / "as_of=2025-06-01"
    folder.mkdir(parents=True)
    frame = pd.DataFrame(
        {"entity_id": ["a", "b"], "score": [10, 20], "band": ["high", "medium"],
         "rule_score": [1.0, 2.0], "reasons_text": ["x", None]}
    )  # fmt: skip
    frame.to_parquet(folder / PARTITION_FILE, index=False)
    read = read_previous_scores(tmp_path, date(2025, 6, 2))
    assert list(read.columns) == ["entity_id", "score", "band", "reasons_text", "as_of"]
    assert read["score"].tolist() == [10, 20]
    every = read_previous_scores(tmp_path, date(2025, 6, 2), columns=None)
    assert "rule_score" in every and set(PREVIOUS_COLUMNS) >= {"entity_id", "score", "band"}
