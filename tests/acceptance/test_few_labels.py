"""Few outcomes are normal: ``leadscore nightly --config`` completes with rule scores.

A user's first data often holds a handful of conversions. The run must not fail for
lack of labels: the target is scored with the rule score, the summary and the end
table say how many more positives training needs, every entity still gets one row,
rule-scored rows get reasons in words and the same three bands as model-scored rows.
A target switched off with ``targets:`` is not trained and is scored by the rules too.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from features.synthetic import generate, source_paths
from models.bands import BANDS
from models.scoring import RULE_SOURCE
from tests.acceptance.conftest import BIN

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-06-30"
CONVERSIONS_KEPT = 5


@pytest.fixture(scope="module")
def few_conversions(tmp_path_factory) -> Path:
    """Six generated months whose outcomes keep only a handful of conversions."""
    root = tmp_path_factory.mktemp("few-labels")
    data = generate(root / "data", n_leads=400, n_customers=200, months=6, seed=11).out_dir
    path = Path(source_paths(data)["outcomes"])
    outcomes = pd.read_parquet(path)
    converted = outcomes.index[outcomes["outcome"] == "converted"]
    assert len(converted) > CONVERSIONS_KEPT
    outcomes.drop(converted[CONVERSIONS_KEPT:]).to_parquet(path, index=False)
    return data


def nightly(tmp_path: Path, env: dict[str, str], data: Path, **settings) -> tuple[str, Path]:
    """``leadscore nightly --as-of AS_OF --config FILE``; its output and output folder."""
    out = tmp_path / "out"
    config = tmp_path / "leadscore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": source_paths(data),
                "output": {"dir": str(out)},
                "schedule": {"psi_warn": 10, "psi_fail": 10},
                "pseudonym_key": "few-labels-tests-key",
                **settings,
            }
        )
    )
    command = [str(BIN / "leadscore"), "nightly", "--as-of", AS_OF, "--config", str(config)]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    return f"exit {done.returncode}\n{done.stdout}\n{done.stderr}", out


def test_too_few_conversions_complete_with_rule_scores_and_reasons(
    prefect_api, few_conversions, tmp_path
):
    output, out = nightly(tmp_path, prefect_api[1], few_conversions, targets=["conversion"])
    assert output.startswith("exit 0"), output
    flat = " ".join(output.split())
    assert "more needed (model.min_positive_labels = 100); scored with the rule score" in flat
    assert "Conversion positives needed" in flat

    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts_match"]
    missing = summary["positives_needed"]["conversion"]
    assert 100 - CONVERSIONS_KEPT <= missing <= 100
    assert f"{missing} more needed" in summary["retrain"]["conversion"]
    assert "switched off by the targets setting" in summary["rule_scored"]["churn"]
    assert set(summary["rule_scored"]) == {"conversion", "churn"}
    assert any("more positive labels are needed" in w for w in summary["warnings"])

    entities = pd.read_parquet(source_paths(few_conversions)["entities"])
    scores = pd.read_parquet(out / "scores" / f"as_of={AS_OF}" / "part-0.parquet")
    assert len(scores) == len(entities) and scores["entity_id"].is_unique
    ruled = scores[scores["score_source"] == RULE_SOURCE]
    assert len(ruled) == int((scores["status"] == "scored").sum()) > 0
    assert (ruled["reasons_text"].fillna("").str.len() > 0).all()
    assert ruled["reasons_text"].str.contains("rule points").any()
    assert set(ruled["band"]) <= set(BANDS)
    # Leads are never at-risk and customers never high, as with a model.
    assert "at-risk" not in set(ruled.loc[ruled["kind"] == "lead", "band"])
    assert "high" not in set(ruled.loc[ruled["kind"] == "customer", "band"])
