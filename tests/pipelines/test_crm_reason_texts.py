"""The CRM reason texts of a whole column equal ``crm_reason_text`` row by row."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from models.reason_text import crm_reason_text
from pipelines.crm_reasons import crm_reason_texts

CONCEPTS = ["demo requests", "=cmd", "-x", 'quo"te', "back\\slash", "ünï", "", "a" * 120, "tab\t"]


def _values(seed: int) -> list[object]:
    rng = random.Random(seed)
    values: list[object] = [
        None, float("nan"), pd.NA, "", "[]", " []", "not json", "[1, 2]", '{"a": 1}',
        '[{"concept": "x", "group": "fit", "text": "t", "impact": 01}]',
        '[{"concept": "x", "group": "fit", "text": "t\\q", "impact": 1}]',
        '[{"concept": "x", "group": "fit", "text": "t", "impact": -0}]',
        '[{"concept": "x", "group": "fit", "text": "}, {", "impact": 2}]',
    ]  # fmt: skip
    for _ in range(400):
        items = []
        for _ in range(rng.randint(0, 6)):
            item = {
                "concept": rng.choice(CONCEPTS),
                "group": rng.choice(["fit", "engagement"]),
                "text": rng.choice(["+3 pts: Job level: Director", 'a"b', "</script>", "}, {"]),
                "impact": rng.choice([0, 3, -5, 12, 1000, 10**16, -0.4, 2.5, None, "7"]),
            }
            if rng.random() < 0.1:
                del item["impact"]
            items.append(item)
        values.append(json.dumps(items, ensure_ascii=rng.random() < 0.7))
    return values


@pytest.mark.parametrize("limit", [255, 60, 20, 3])
def test_column_texts_equal_row_texts(limit: int) -> None:
    rng = random.Random(limit)
    values = _values(limit)
    up = [rng.choice(values) for _ in range(3000)]
    down = [rng.choice(values) for _ in range(3000)]
    expected = [crm_reason_text(u, d, limit) for u, d in zip(up, down, strict=True)]
    got = crm_reason_texts(np.array(up, dtype=object), pd.Series(down, dtype=object), limit)
    assert got.dtype == object
    assert got.tolist() == expected


def test_values_that_are_not_text_go_row_by_row() -> None:
    parsed = [[{"concept": "webinars", "impact": 4}], None]
    assert crm_reason_texts(pd.Series(parsed), ["[]", None]).tolist() == [
        crm_reason_text(parsed[0], "[]"),
        "",
    ]
    assert crm_reason_texts([], []).tolist() == []
