"""The docs stay true: every module is named in ARCHITECTURE.md, SETTINGS.md is current."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pipelines.settings_reference import settings_markdown

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "models", "pipelines")


def _modules() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *PACKAGES],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(p for p in listed if p.endswith(".py") and not p.endswith("__init__.py"))


def test_every_module_is_named_in_the_architecture_doc():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    missing = [m for m in _modules() if f"`{m}`" not in text]
    assert _modules(), "no module found: the check would pass by reading nothing"
    assert not missing, f"docs/ARCHITECTURE.md's module map lacks {missing}"


def test_the_settings_reference_is_generated_from_the_settings():
    path = REPO / "docs" / "SETTINGS.md"
    assert path.read_text() == settings_markdown(), (
        "docs/SETTINGS.md is stale: run `python -m pipelines.settings_reference > docs/SETTINGS.md`"
    )


def test_every_setting_says_what_it_does():
    rows = [line for line in settings_markdown().splitlines() if line.startswith("| `")]
    cells = [re.split(r"(?<!\\)\|", row)[1:-1] for row in rows]
    unexplained = [row[0].strip() for row in cells if not row[-1].strip()]
    assert rows and not unexplained, f"settings without a meaning: {unexplained}"
