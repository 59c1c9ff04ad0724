"""A purchase log alone: ``sources.entities: null``, ``sources.outcomes: null`` and a
constant event type, read by the run, by ``leadscore check`` and by ``forget``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from pipelines import cli
from pipelines.cli import app
from pipelines.settings import load_settings
from pipelines.sources import load_inputs, read_entities


def purchase_log_sources(events: Path) -> dict:
    """The ``sources`` settings of a CDNOW-shaped purchase log read alone: its columns
    mapped (the customer id also as CRM id), a constant event type, no entities file
    and no outcomes."""
    return {
        "events": str(events),
        "entities": None,
        "outcomes": None,
        "column_map": {
            "events": {
                "customer_id": ["entity_id", "crm_id"],
                "date": "event_time",
                "dollar_value": "value",
            },
        },
        "constant": {"events": {"event_type": "purchase"}},
    }


def purchase_log_config(folder: Path) -> Path:
    """A CSV purchase log (ids with leading zeros) and a config naming only it."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "customer_id": ["00002", "00001", "00002", "00003", "00001"],
            "date": ["1997-01-12", "1997-01-01", "1997-01-03", "1997-03-01", "1997-02-20"],
            "dollar_value": [12.0, 11.77, 20.5, 5.0, 0.0],
        }
    ).to_csv(folder / "purchases.csv", index=False)
    config = folder / "leadscore.yaml"
    sources = purchase_log_sources(folder / "purchases.csv")
    settings = {"sources": sources, "output": {"dir": str(folder / "out")}}
    config.write_text(yaml.safe_dump(settings))
    return config


def test_entities_come_from_the_events_and_outcomes_are_empty(tmp_path):
    settings = load_settings(purchase_log_config(tmp_path))

    inputs = load_inputs(settings, "1997-04-01")

    assert inputs.entities["entity_id"].tolist() == ["00001", "00002", "00003"]
    assert inputs.entities["crm_id"].tolist() == ["00001", "00002", "00003"]
    assert inputs.entities["created_at"].dt.strftime("%Y-%m-%d").tolist() == [
        "1997-01-01", "1997-01-03", "1997-03-01",
    ]  # fmt: skip
    assert set(inputs.events.to_pandas()["event_type"]) == {"purchase"}
    assert inputs.outcomes.empty and inputs.report.entities == 3
    # forget reads the same entities (for their crm_id) without an entities file.
    assert read_entities(settings)["entity_id"].tolist() == ["00001", "00002", "00003"]


def test_check_cli_reads_a_purchase_log_alone(tmp_path, monkeypatch):
    config = purchase_log_config(tmp_path)
    monkeypatch.setattr(cli.console, "width", 250)

    done = CliRunner().invoke(app, ["check", "-c", str(config), "--as-of", "1997-04-01"])

    assert done.exit_code == 0, done.output
    assert "the events (sources.entities: null)" in done.output
    assert "none (sources.outcomes: null)" in done.output
    assert "purchase" in done.output
    assert not (tmp_path / "out").exists()
