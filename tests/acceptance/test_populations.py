"""Kinds inferred without a ``kind`` column, through ``leadscore nightly --config FILE``.

The generated history of ``conftest.py`` loses its ``kind`` column: kinds are then
inferred (a ``converted`` outcome or a ``purchase`` event makes a customer), the run
summary says how many of each it found, and the inferred customers are scored by the
churn model (or, without a churn champion, by its rule score, as the summary states).
"""

from __future__ import annotations

import json
import os
import shutil

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-12-01"


def test_without_a_kind_column_kinds_are_inferred_and_customers_get_churn(workspace, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(workspace.data, data)
    entities = pd.read_parquet(data / "entities.parquet")
    given = entities["kind"].astype(str)
    entities.drop(columns="kind").to_parquet(data / "entities.parquet", index=False)
    settings = yaml.safe_load(workspace.config.read_text())
    settings["sources"] = {
        key: str(data / os.path.relpath(path, workspace.data))
        for key, path in settings["sources"].items()
    }
    settings["output"] = {"dir": str(tmp_path / "out")}
    config = tmp_path / "no-kind.yaml"
    config.write_text(yaml.safe_dump(settings))

    workspace.run(tmp_path, "nightly", "--as-of", AS_OF, "--config", str(config), with_config=False)

    summary = json.loads((tmp_path / "out" / "summaries" / f"{AS_OF}.json").read_text())
    inferred = summary["kinds_inferred"]
    assert inferred["customer"] > 0 and inferred["lead"] > 0
    assert inferred["customer"] + inferred["lead"] == len(entities)
    # Most generated customers bought something: inference finds them.
    assert inferred["customer"] >= 0.5 * (given == "customer").sum()
    scores = pd.read_parquet(tmp_path / "out" / "scores" / f"as_of={AS_OF}" / "part-0.parquet")
    customers = scores[(scores["kind"] == "customer") & (scores["status"] == "scored")]
    assert len(customers) > 0
    if summary["champions"].get("churn", "").startswith("none"):
        pytest.fail(f"No churn champion trained on the inferred customers: {summary['retrain']}")
    assert customers["churn_probability"].notna().all()
