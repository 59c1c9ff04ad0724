"""``leadscore init`` and ``leadscore check`` on a raw CRM export with its own names.

:func:`write_raw_export` writes what a new user brings: 50 leads in three CSV files
with their own column names (``contact_id``, ``timestamp``, ``activity``; ``Contact``,
``Stage``, ``Closed On``), their own values (``"Email Opened"``, ``"Closed Won"``)
and US dates (``03/04/2025 10:00``). :func:`edit_starter_config` edits the config
``leadscore init`` writes as that user would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from features.column_checks import ContractError
from features.spec import DEFAULT_EVENT_TYPES
from pipelines import cli
from pipelines.check import run_check
from pipelines.cli import app
from pipelines.settings import Settings, load_settings
from pipelines.starter_config import STARTER_CONFIG, write_starter_config

US = "%m/%d/%Y %H:%M"
#: The export's activities; "Podcast Listened" is left unmapped (generic).
ACTIVITIES = ("Email Opened", "Email Clicked", "Page Visit", "Demo Request", "Podcast Listened")
WON, LOST = 8, 3


def write_raw_export(folder: Path) -> dict[str, Path]:
    """50 leads (two without events), ~5 months of activities, 8 won and 3 lost deals."""
    rng = np.random.default_rng(14)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"C{n:04d}" for n in range(1, 51)]
    created = pd.Timestamp("2025-01-02 09:00") + pd.to_timedelta(rng.integers(0, 20, 50), "D")
    companies = [f"Co {n % 7}" for n in range(50)]
    contacts = pd.DataFrame(
        {"contact_id": ids, "created": created.strftime(US), "company": companies}
    )
    n = 1_500
    when = pd.Timestamp("2025-01-25") + pd.to_timedelta(rng.integers(0, 125 * 24 * 60, n), "min")
    events = pd.DataFrame(
        {
            "contact_id": np.array(ids)[rng.integers(0, 48, n)],
            "timestamp": when.strftime(US),
            "activity": rng.choice(ACTIVITIES, n, p=[0.4, 0.2, 0.25, 0.05, 0.1]),
        }
    )
    closed = pd.Timestamp("2025-04-20") + pd.to_timedelta(np.arange(WON + LOST) * 3, "D")
    deals = pd.DataFrame(
        {
            "Contact": ids[: WON + LOST],
            "Stage": ["Closed Won"] * WON + ["Closed Lost"] * LOST,
            "Closed On": closed.strftime(US),
        }
    )
    paths = {
        "events": folder / "activities.csv",
        "entities": folder / "contacts.csv",
        "outcomes": folder / "deals.csv",
    }
    events.to_csv(paths["events"], index=False)
    contacts.to_csv(paths["entities"], index=False)
    deals.to_csv(paths["outcomes"], index=False)
    return paths


def edit_starter_config(config: Path, export: dict[str, Path], out: Path) -> None:
    """Point the starter config at the export and the output folder, as a user would."""
    text = config.read_text()
    edits = {
        "exports/activities.csv": str(export["events"]),
        "exports/contacts.csv": str(export["entities"]),
        "exports/deals.csv": str(export["outcomes"]),
        "      contact_id: entity_id\n      stage: outcome\n      closed: occurred_at": (
            '      Contact: entity_id\n      Stage: outcome\n      "Closed On": occurred_at'
        ),
        '"Page Visit": page_view': '"Page Visit": page_view\n        "Demo Request": demo_request',
        "  dir: output": f"  dir: {out}",
    }
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    config.write_text(text)


@pytest.fixture
def user(tmp_path) -> tuple[Path, Path]:
    """A raw export and the starter config edited to read it: (config, output folder)."""
    export = write_raw_export(tmp_path / "exports")
    config = write_starter_config(tmp_path / "leadscore.yaml")
    out = tmp_path / "out"
    edit_starter_config(config, export, out)
    return config, out


def test_the_starter_config_loads_with_defaults_and_mentions_every_section(tmp_path):
    config = write_starter_config(tmp_path / "leadscore.yaml")

    settings = load_settings(config)

    defaults = Settings().model_dump()
    loaded = settings.model_dump()
    assert {k: v for k, v in loaded.items() if k != "sources"} == {
        k: v for k, v in defaults.items() if k != "sources"
    }
    assert settings.sources.column_map["entities"]["contact_id"] == ["entity_id", "crm_id"]
    assert settings.sources.value_map["events"]["event_type"]["Email Opened"] == "email_opened"
    assert settings.sources.value_map["outcomes"]["outcome"]["Closed Won"] == "converted"
    text = STARTER_CONFIG.read_text()
    assert all(f"{name}:" in text for name in Settings.model_fields)


def test_timestamp_format_is_global_or_per_input(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"sources": {"timestamp_format": {"events": US}}}))
    sources = load_settings(config).sources
    assert sources.mapping("events").timestamp_format == US
    assert sources.mapping("entities").timestamp_format is None
    config.write_text(yaml.safe_dump({"sources": {"value_map": {"event": {}}}}))
    with pytest.raises(ValueError, match="sources.value_map.event"):
        load_settings(config)


def test_check_counts_rows_types_and_labels_of_a_raw_export(user):
    config, out = user
    settings = load_settings(config)

    report = run_check(settings)

    counts = report.inputs.report
    assert (counts.events, counts.entities, counts.outcomes) == (1_500, 50, WON)  # lost dropped
    assert str(report.as_of.date()) == "2025-05-30" and not report.as_of_given
    status = dict(report.event_types[["event_type", "status"]].itertuples(index=False))
    assert status == {
        "email_opened": "mapped", "email_clicked": "mapped", "page_view": "mapped",
        "demo_request": "mapped", "Podcast Listened": "generic",
    }  # fmt: skip
    assert report.entities_without_events == 2
    conversion = report.labels[0]
    assert conversion.target == "conversion" and conversion.outcomes == WON
    assert 0 < conversion.positives < conversion.needed == 100 and not conversion.enough
    assert not out.exists()


def test_check_cli_prints_tables_and_writes_nothing(user, monkeypatch):
    config, out = user
    monkeypatch.setattr(cli.console, "width", 250)  # one line per sentence and row

    done = CliRunner().invoke(app, ["check", "-c", str(config), "--as-of", "2025-05-30"])

    assert done.exit_code == 0, done.output
    for words in ("Inputs", "Event types", "Labels for training", "Podcast Listened", "generic",
                  "more positives (rule score used)", "Nothing was written"):  # fmt: skip
        assert words in done.output
    assert all(t.name in done.output for t in DEFAULT_EVENT_TYPES)
    assert not out.exists()


def test_check_cli_exits_1_with_the_contract_sentence(user):
    config, out = user
    config.write_text(config.read_text().replace('"Closed Won": converted', '"Won": converted'))

    done = CliRunner().invoke(app, ["check", "-c", str(config)])

    assert done.exit_code == 1
    # Rich wraps at the terminal width, and the temporary path's length moves the break.
    said = " ".join(done.output.split())
    assert "'Closed Won' (8 rows)" in said and "value_map" in said
    assert "Traceback" not in done.output and not out.exists()


def test_init_refuses_to_overwrite_without_force(tmp_path):
    config = tmp_path / "leadscore.yaml"
    config.write_text("seed: 1\n")
    runner = CliRunner()

    refused = runner.invoke(app, ["init", "--out", str(config)])
    assert refused.exit_code == 1 and "--force" in refused.output
    assert config.read_text() == "seed: 1\n"

    forced = runner.invoke(app, ["init", "--out", str(config), "--force"])
    assert forced.exit_code == 0 and config.read_text() == STARTER_CONFIG.read_text()


def test_a_us_date_that_does_not_parse_is_a_sentence(user):
    config, _ = user
    export = load_settings(config).sources.events
    lines = Path(export).read_text().splitlines()
    lines[3] = lines[3].replace("/2025 ", "/2025T")
    Path(export).write_text("\n".join(lines) + "\n")

    with pytest.raises(ContractError) as raised:
        run_check(load_settings(config))

    assert f"events ({export}): column 'event_time' has 1 value(s)" in str(raised.value)
    assert "row 3:" in str(raised.value)
