"""``leadscore nightly --config``: identifier-like attributes never reach a reason raw.

The entities export gains a hash-valued column with 300 levels and a partner code
column of hashes (named through ``reasons.lookups``); neither value is ever printed
in a reason, the CRM text or the board.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.synthetic import source_paths
from models.reason_text import parse_reasons
from tests.acceptance.conftest import BIN

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-12-01"
CAMPAIGNS = [hashlib.sha256(f"campaign {i}".encode()).hexdigest() for i in range(300)]
PARTNERS = [hashlib.md5(f"partner {i}".encode()).hexdigest() for i in range(5)]  # noqa: S324


def test_hash_valued_attributes_never_appear_raw(prefect_api, shared_history, tmp_path):
    data = Path(shutil.copytree(shared_history, tmp_path / "data"))
    paths = source_paths(data)
    entities = pd.read_parquet(paths["entities"])
    outcomes = pd.read_parquet(paths["outcomes"])
    converted = entities["entity_id"].isin(
        outcomes.loc[outcomes["outcome"] == "converted", "entity_id"]
    )
    rng = np.random.default_rng(5)
    # The partner code carries some signal, so the models use it in reasons.
    n = len(entities)
    partner = np.where(converted & (rng.random(n) < 0.5), 0, rng.integers(1, 5, n))
    entities["campaign"] = rng.choice(CAMPAIGNS, n)
    entities["partner_code"] = np.array(PARTNERS)[partner]
    entities.to_parquet(paths["entities"], index=False)
    lookup = tmp_path / "partners.csv"
    pd.DataFrame({"value": PARTNERS, "label": [f"Partner {i}" for i in range(5)]}).to_csv(
        lookup, index=False
    )
    out = tmp_path / "out"
    config = tmp_path / "leadscore.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": paths,
                "output": {"dir": str(out)},
                "model": {"min_positive_labels": 30, "promotion_confidence": 0.0},
                "schedule": {"psi_warn": 10, "psi_fail": 10},
                "reasons": {"lookups": {"partner_code": str(lookup)}},
                "pseudonym_key": "reason-wording-tests-key",
            }
        )
    )
    command = [str(BIN / "leadscore"), "nightly", "--as-of", AS_OF, "--config", str(config)]
    done = subprocess.run(
        command, cwd=tmp_path, env=prefect_api[1], capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    scores = pd.concat(pd.read_parquet(p) for p in (out / "scores").rglob("*.parquet"))
    texts = [
        reason["text"]
        for column in ("reasons_up", "reasons_down")
        for raw in scores[column]
        for reason in parse_reasons(raw)
    ]
    assert texts
    everything = "\n".join([*texts, *scores["reasons_text"].dropna()])
    for folder in ("crm", "board"):
        for path in (out / folder).rglob("*"):
            if path.is_file() and path.suffix in (".csv", ".html", ".json"):
                everything += path.read_text(errors="replace")
    leaked = [value for value in [*CAMPAIGNS, *PARTNERS] if value in everything]
    assert not leaked, leaked[:3]
    worded = [t for t in texts if "Campaign:" in t or "Partner code:" in t]
    assert worded, "neither attribute reached a reason"
    # The group counts the levels the model was trained on.
    grouped = re.compile(
        r"(Campaign|Partner code): (one of \d+ values|a value new since training)"
        r"|Partner code: Partner \d"
    )
    assert [t for t in worded if not grouped.search(t)] == []
