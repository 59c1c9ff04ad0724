"""``leadscore forget`` and the incremental roll-ups (``features.incremental_rollups``).

The roll-ups in ``OUTPUT/rollups/`` hold per-entity daily aggregates, items and NPS
answers. Forgetting entities deletes them (the receipt says so), and the next nightly
rebuilds them from the events without the forgotten entities (their keyed hashes are
listed: the conftest's config sets a pseudonym key).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.service]

DAYS = ("2025-12-01", "2025-12-02")


def rollup_ids(out: Path) -> set[str]:
    """Every entity id in any roll-up Parquet file."""
    ids: set[str] = set()
    for path in (out / "rollups").rglob("*.parquet"):
        ids |= set(pd.read_parquet(path, columns=["entity_id"])["entity_id"].astype(str))
    return ids


def test_forget_deletes_the_rollups_and_the_next_night_rebuilds_them_without_the_entities(
    workspace, tmp_path
):
    settings = yaml.safe_load(workspace.config.read_text())
    settings["features"] = {"incremental_rollups": True}
    config = tmp_path / "rollups.yaml"
    config.write_text(yaml.safe_dump(settings))
    out = workspace.out
    workspace.run(tmp_path, "nightly", "--as-of", DAYS[0], "--config", str(config),
                  with_config=False)  # fmt: skip
    ids = sorted(rollup_ids(out))[:2]
    assert len(ids) == 2  # the roll-ups hold these entities

    workspace.run(tmp_path, "forget", *ids, "--config", str(config), with_config=False)
    assert not (out / "rollups").exists()
    receipt = json.loads(next((out / "erasure").glob("receipt-*.json")).read_text())
    store = next(s for s in receipt["stores"] if s["store"].startswith("incremental roll-ups"))
    assert store["files_deleted"] > 0

    workspace.run(tmp_path, "nightly", "--as-of", DAYS[1], "--config", str(config),
                  with_config=False)  # fmt: skip
    inputs = json.loads((out / "summaries" / f"{DAYS[1]}.json").read_text())["inputs"]
    assert inputs["rollups_used"] == 0  # rebuilt, from every event before the run date
    assert (out / "rollups" / "CURRENT").exists()
    assert rollup_ids(out)  # rebuilt ...
    assert not set(ids) & rollup_ids(out)  # ... without the forgotten entities
