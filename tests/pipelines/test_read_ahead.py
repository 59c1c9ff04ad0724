"""Inputs read ahead by a command are taken by its flow only when nothing they depend on changed."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import yaml

from features.synthetic import source_paths
from pipelines import read_ahead, steps
from pipelines.context import build_context
from pipelines.errors import user_facing_message

AS_OF = "2025-12-01"


@pytest.fixture
def config(shared_history, tmp_path):
    """A config reading a copy of the shared history (the tests change it)."""
    data = shutil.copytree(shared_history, tmp_path / "data")
    path = tmp_path / "leadscore.yaml"
    path.write_text(
        yaml.safe_dump({"sources": source_paths(data), "output": {"dir": str(tmp_path / "out")}})
    )
    yield path
    read_ahead.drop()


def test_the_flow_takes_the_inputs_read_ahead_in_another_thread_once(config, monkeypatch, caplog):
    readers = []
    load = steps.load_inputs

    def recording(ctx):  # noqa: ANN001, ANN202
        readers.append(threading.current_thread().name)
        return load(ctx)

    monkeypatch.setattr(steps, "load_inputs", recording)
    read_ahead.read_ahead(build_context(config, AS_OF))
    # The flow builds its own context from the same file and date.
    with caplog.at_level("INFO", logger="pipelines.steps"):
        inputs = read_ahead.take(build_context(str(config.resolve()), AS_OF))
    assert inputs is not None
    assert "inputs read ahead while Prefect started" in caplog.text
    assert readers and readers[0].startswith("read-ahead")
    fresh = load(build_context(config, AS_OF))
    assert inputs.report == fresh.report
    assert inputs.entities.equals(fresh.entities)
    assert read_ahead.take(build_context(config, AS_OF)) is None  # taken once


@pytest.mark.parametrize(
    "other", [{"as_of": "2025-12-02"}, {"allow_future": True}], ids=["run date", "allow_future"]
)
def test_a_read_for_another_context_is_not_taken(config, other):
    read_ahead.read_ahead(build_context(config, AS_OF))
    as_of = other.get("as_of", AS_OF)
    ctx = build_context(config, as_of, allow_future=other.get("allow_future", False))
    assert read_ahead.take(ctx) is None


def test_a_read_is_not_taken_after_a_run_changed_the_output_folder(config):
    ctx = build_context(config, AS_OF)
    read_ahead.read_ahead(ctx)
    summary = ctx.output_dir / "summary.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    # A run that finished meanwhile: the feed check must compare with its summary.
    summary.write_text(json.dumps({"as_of": "2025-11-30", "inputs": {"events": 1}}))
    assert read_ahead.take(ctx) is None


def test_a_failed_read_raises_its_own_sentence_from_the_task(config):
    ctx = build_context(config, AS_OF)
    Path(ctx.settings.sources.entities).unlink()
    with pytest.raises(Exception) as direct:
        steps.load_inputs(ctx)
    read_ahead.read_ahead(ctx)
    with pytest.raises(type(direct.value)) as taken:
        read_ahead.take(ctx)
    assert str(taken.value) == str(direct.value)
    assert "entities" in user_facing_message(taken.value)


def test_a_dropped_read_is_never_taken(config):
    ctx = build_context(config, AS_OF)
    read_ahead.read_ahead(ctx)
    read_ahead.drop()
    assert read_ahead.take(ctx) is None


def test_nothing_is_read_ahead_while_another_run_holds_the_output_folder(config, monkeypatch):
    from pipelines.run_lock import lock_path

    ctx = build_context(config, AS_OF)
    lock_path(ctx.output_dir).parent.mkdir(parents=True, exist_ok=True)
    lock_path(ctx.output_dir).write_text("{}")
    started = []
    monkeypatch.setattr(steps, "load_inputs", lambda ctx: started.append(ctx))
    read_ahead.read_ahead(ctx)
    assert read_ahead.take(ctx) is None
    assert started == []
