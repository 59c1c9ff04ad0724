"""CSV lines made by Arrow are pandas' ``to_csv`` bytes, character for character."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.crm_export import csv_safe, write_crm_batches
from pipelines.csv_text import csv_lines, write_csv

#: Texts that need quoting, doubling, or nothing: what CRM fields may hold.
TRICKY = [
    "plain",
    "",
    "comma, inside",
    'a "quote"',
    '"',
    "line\nbreak",
    "carriage\rreturn",
    "both\r\n",
    " leading and trailing ",
    "Up: fit +3. Down: tenure -1.",
    "'=formula",
    "ünïcödé — 名前",
    "tab\there",
    "semi;colon",
    "=1+1",
    "-3 pts",
]


def pandas_bytes(frame: pd.DataFrame, path) -> bytes:
    frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\r\n")
    return path.read_bytes()


def arrow_bytes(frame: pd.DataFrame, path) -> bytes:
    write_csv(frame, path)
    return path.read_bytes()


def random_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    texts = rng.choice(np.array(TRICKY, dtype=object), n)
    missing = rng.random(n) < 0.2
    floats = rng.choice(
        np.array([0.1, 2.0, 1e-05, 1e16, -0.0, 30.4, 123456789.123, 1 / 3, np.inf, -np.inf]), n
    ) * rng.choice([1.0, -1.0, 1e-3, 1e5], n)
    floats[rng.random(n) < 0.2] = np.nan
    return pd.DataFrame(
        {
            "Id": pd.array([f"CRM-{i:07d}" for i in range(n)], dtype="str"),
            "Score": pd.array(np.where(missing, None, rng.integers(0, 101, n)), dtype="Int64"),
            "Text, with comma": pd.array(np.where(missing, None, texts), dtype="str"),
            "Objects": pd.Series(np.where(rng.random(n) < 0.2, None, texts), dtype=object),
            "Python text": pd.array(np.where(missing, None, texts), dtype="string[python]"),
            "Count": rng.integers(-(10**12), 10**12, n),
            "Probability": floats,
        }
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_frames_match_pandas_byte_for_byte(tmp_path, seed):
    frame = random_frame(np.random.default_rng(seed), 500)
    assert csv_lines(frame) is not None  # the Arrow path, not the fallback
    assert arrow_bytes(frame, tmp_path / "a.csv") == pandas_bytes(frame, tmp_path / "p.csv")


def test_empty_frame_writes_the_header_as_pandas_does(tmp_path):
    frame = random_frame(np.random.default_rng(0), 3).iloc[:0]
    assert arrow_bytes(frame, tmp_path / "a.csv") == pandas_bytes(frame, tmp_path / "p.csv")


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"only": ["", "x"]}),  # one column: csv quotes an empty field
        pd.DataFrame({"when": pd.to_datetime(["2025-06-02"], utc=True), "x": [1]}),
        pd.DataFrame({"flag": [True, False], "x": [1, 2]}),
        pd.DataFrame({"mixed": [1, "a"], "x": [1, 2]}),
        pd.DataFrame({"f32": np.array([0.1, 2.5], dtype="float32"), "x": [1, 2]}),
        pd.DataFrame({"bad": ["\ud800", "x"], "x": [1, 2]}, dtype=object),
        pd.DataFrame({0: ["a", "b"], 1: ["c", "d"]}),
    ],
    ids=["one column", "dates", "booleans", "mixed objects", "float32", "surrogate", "int names"],
)
def test_other_columns_fall_back_to_pandas(tmp_path, frame):
    assert csv_lines(frame) is None
    try:
        expected = pandas_bytes(frame, tmp_path / "p.csv")
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            write_csv(frame, tmp_path / "a.csv")
        return
    assert arrow_bytes(frame, tmp_path / "a.csv") == expected


def test_crm_batches_are_pandas_batches(tmp_path):
    frame = random_frame(np.random.default_rng(3), 1003)
    safe = pd.DataFrame({column: csv_safe(frame[column]) for column in frame.columns})
    written = write_crm_batches({"batch": frame}, tmp_path, batch_size=250)
    assert [p.name for p in written] == [f"batch-{i:04d}.csv" for i in range(1, 6)]
    for number, path in enumerate(written):
        part = safe.iloc[number * 250 : (number + 1) * 250]
        expected = pandas_bytes(part, tmp_path / "expected.csv")
        assert path.read_bytes() == expected
