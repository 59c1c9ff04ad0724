"""The settings reference: every setting, its type, default and meaning, as Markdown.

Generated from the settings model itself (the ``#:`` comment above each field, or the
section's docstring), so ``docs/SETTINGS.md`` cannot drift from the code: a test
compares the file with :func:`settings_markdown`. Regenerate it with
``python -m pipelines.settings_reference > docs/SETTINGS.md``.
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

from pydantic import BaseModel, SecretStr

from pipelines.settings import Settings

_COMMENT = re.compile(r"^\s*#:\s?(.*)$")
_FIELD = re.compile(r"^\s*(\w+)\s*:")


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``#:`` comment lines above each field of ``model``, joined into one text."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(model).splitlines():
        comment = _COMMENT.match(line)
        if comment:
            pending.append(comment.group(1).strip())
            continue
        field = _FIELD.match(line)
        if field and field.group(1) in model.model_fields and pending:
            comments[field.group(1)] = " ".join(pending)
        pending = [] if not line.strip().startswith("#") else pending
    return comments


def _default(value: Any) -> str:
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, BaseModel):
        return "(section)"
    text = json.dumps(value, default=str)
    return "`" + text.replace("|", "\\|") + "`"


def _type(annotation: Any) -> str:
    if getattr(annotation, "__args__", None):
        text = str(annotation)
    else:
        text = getattr(annotation, "__name__", None) or str(annotation)
    for noise in ("typing.", "pydantic.types.", "pathlib."):
        text = text.replace(noise, "")
    return "`" + text.replace("|", "\\|") + "`"


def nested_model(annotation: Any) -> type[BaseModel] | None:
    """The settings model inside ``Model`` or ``Model | None``, else ``None``."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _section_rows(prefix: str, model: type[BaseModel]) -> list[str]:
    comments = field_comments(model)
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            continue
        meaning = comments.get(name) or field.description or ""
        default = "(required)" if field.is_required() else _default(field.get_default(
            call_default_factory=True))  # fmt: skip
        rows.append(
            f"| `{prefix}{name}` | {_type(annotation)} | {default} "
            f"| {meaning.replace('|', chr(92) + '|')} |"
        )
    return rows


def _nested_sections(prefix: str, model: type[BaseModel]) -> list[str]:
    """A table per optional nested model of a section (``sources.snapshot``)."""
    lines: list[str] = []
    for name, field in model.model_fields.items():
        inner = nested_model(field.annotation)
        if inner is None or inner is field.annotation:
            continue
        doc = (inspect.getdoc(inner) or "").split("\n\n")[0].replace("\n", " ")
        lines += ["", f"### `{prefix}{name}`", "", doc, ""]
        lines += ["| setting | type | default | meaning |", "|---|---|---|---|"]
        lines += _section_rows(f"{prefix}{name}.", inner)
    return lines


def settings_markdown() -> str:
    """Markdown tables of every setting, one per section."""
    lines = [
        "# Settings reference",
        "",
        "Every setting of `leadscore`, generated from `pipelines/settings*.py` by "
        "`python -m pipelines.settings_reference` (a test keeps this file in step).",
        "Set them in the config file (YAML, TOML or JSON, nested by section) or as",
        "environment variables `LEADSCORE_<SECTION>__<KEY>` (for example",
        "`LEADSCORE_MODEL__MIN_POSITIVE_LABELS=50`). Unknown keys are an error naming",
        "the closest valid key.",
        "",
        "## Top level",
        "",
        "| setting | type | default | meaning |",
        "|---|---|---|---|",
        *_section_rows("", Settings),
    ]
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            doc = inspect.getdoc(annotation) or ""
            lines += ["", f"## `{name}`", "", doc.split("\n\n")[0].replace("\n", " "), ""]
            lines += ["| setting | type | default | meaning |", "|---|---|---|---|"]
            lines += _section_rows(f"{name}.", annotation)
            lines += _nested_sections(f"{name}.", annotation)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.stdout.write(settings_markdown())
