"""Which entities withdrew consent: the earlier partitions read with Arrow kernels."""

from __future__ import annotations

from datetime import date

import pandas as pd

from models.entity_status import NO_CONSENT, SCORED
from pipelines.outputs import PARTITION_FILE, partition_dir
from pipelines.retention import withdrawn_consent


def _partition(out, day: str, ids: list[object], status: list[object]) -> None:
    folder = partition_dir(out, date.fromisoformat(day))
    folder.mkdir(parents=True)
    frame = pd.DataFrame({"entity_id": ids, "status": pd.Series(status, dtype="str")})
    frame.to_parquet(folder / PARTITION_FILE, index=False)


def test_withdrawn_consent_finds_profiled_rows_of_every_earlier_partition(tmp_path):
    _partition(tmp_path, "2025-06-01", ["a", "b", "c"], [SCORED, NO_CONSENT, None])
    _partition(tmp_path, "2025-06-02", ["a", "d", "e"], [NO_CONSENT, SCORED, NO_CONSENT])
    _partition(tmp_path, "2025-06-03", ["f"], [SCORED])  # the run's own date: not read
    refused = ["a", "b", "c", "d", "e", "f", "unknown"]

    # "a" and "d" were scored, "c" has an empty status (profiled), "b" and "e" never were.
    assert withdrawn_consent(tmp_path, refused, date(2025, 6, 3)) == ["a", "c", "d"]
    assert withdrawn_consent(tmp_path, ["b", "e"], date(2025, 6, 3)) == []
    assert withdrawn_consent(tmp_path, [], date(2025, 6, 3)) == []
    assert withdrawn_consent(tmp_path, refused, date(2025, 6, 1)) == []


def test_withdrawn_consent_compares_ids_as_text(tmp_path):
    _partition(tmp_path, "2025-06-01", [1, 2], [SCORED, SCORED])

    assert withdrawn_consent(tmp_path, ["2", "3"], date(2025, 6, 2)) == ["2"]
