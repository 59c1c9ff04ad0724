"""``model.max_training_rows`` through ``leadscore train --config``: the bounded sample is
stated in the training record and the model card."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.service]

AS_OF = "2025-12-01"


def test_a_small_max_training_rows_trains_on_a_stated_weighted_sample(workspace, tmp_path):
    settings = yaml.safe_load(workspace.config.read_text())
    settings["model"]["max_training_rows"] = 1_500
    config = workspace.config.with_name("bounded.yaml")
    config.write_text(yaml.safe_dump(settings))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = replace(workspace, config=config).run(
        cwd, "train", "--target", "conversion", "--as-of", AS_OF
    )
    record = json.loads((workspace.out / "training" / f"conversion-{AS_OF}.json").read_text())
    for text in (done.stdout, record["decision"]):
        assert "trained on " in text and "negatives (weight" in text
        assert "calibrated and validated on unsampled rows" in text
    cards = sorted(workspace.out.rglob("model_card.md"), key=lambda p: p.stat().st_mtime)
    card = cards[-1].read_text()
    assert "negatives (weight" in card and "population's scale" in card
