"""Weighted-rule scores: a rule file of signals and points, scored over the feature table.

A rule file (YAML or TOML; the defaults live in ``models/rulefiles``) lists *signals*.
Each signal reads one feature-table column and turns it into a number of *units*:

* ``flag``: 1 unit when ``column <op> value`` holds (``op`` one of ``>= > <= < == !=``),
  else 0. ``missing`` (default false) is the flag's value when the column is empty.
* ``per_unit``: ``floor(column / unit)`` units, at least 0 and at most ``max_units``
  (or ``cap`` points, i.e. ``cap / |points|`` units); ``unit_label`` names one unit.
  An empty value counts 0 units, or ``max_units`` with ``missing: max`` (e.g. "never
  active" is the longest inactivity).
* ``category_equals``: 1 unit when the column equals ``value``.

Every signal has a plain-English ``description`` for the marketer, written as a short
label, a colon and the definition ("Weekly login: logged in ..."); reports use the
label. The score is ``units @ points`` clipped to ``0..max_score`` (150 by default); bands are
the highest band whose ``min`` the score reaches. ``excludes`` makes signals not
stack: when a signal fires, the signals it excludes count 0 units. The excluding
signal must be worth at least as much (same sign, at least the same size), so "the
higher applies" holds whatever the points.
"""

from __future__ import annotations

import math
import os
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

SignalKind = Literal["flag", "per_unit", "category_equals"]
#: Comparison operators a ``flag`` condition may use.
OPERATORS = {
    ">=": np.greater_equal,
    ">": np.greater,
    "<=": np.less_equal,
    "<": np.less,
    "==": np.equal,
    "!=": np.not_equal,
}
#: The rule files shipped with the package (``models/rulefiles/<name>.yaml``).
BUILTIN_RULE_FILES = ("engagement", "lead", "purchase")


class RuleFileError(ValueError):
    """A rule file, or the frame it is applied to, does not fit the rule format."""


def signal_label(description: str, name: str) -> str:
    """Short name of a signal: its description up to the colon, else its name."""
    head, colon, _ = description.partition(":")
    if colon and 0 < len(head.strip()) <= 40:
        return head.strip()
    return name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Signal:
    """One scored signal of a rule file (see the module docstring for the kinds)."""

    name: str
    description: str
    column: str
    kind: SignalKind
    points: int
    op: str | None = None
    value: Any = None
    unit: float = 1.0
    max_units: int | None = None
    missing: bool | Literal["zero", "max"] = False
    excludes: tuple[str, ...] = ()
    #: What one unit is, for reports ("key feature", "10 minutes of session").
    unit_label: str = ""

    @property
    def label(self) -> str:
        """Short name for reports (:func:`signal_label`)."""
        return signal_label(self.description, self.name)

    @property
    def cap(self) -> int | None:
        """Most points (in absolute value) the signal can give, ``None`` when uncapped."""
        if self.kind != "per_unit":
            return abs(self.points)
        return None if self.max_units is None else self.max_units * abs(self.points)

    @property
    def max_units_or_one(self) -> float:
        """Units when the signal is at its fullest (``inf`` for an uncapped count)."""
        if self.kind != "per_unit":
            return 1.0
        return math.inf if self.max_units is None else float(self.max_units)


@dataclass(frozen=True)
class Band:
    """A score band: rows scoring at least ``min`` (and below the next band up)."""

    name: str
    min: int


@dataclass(frozen=True)
class RuleSet:
    """A parsed rule file."""

    name: str
    signals: tuple[Signal, ...]
    bands: tuple[Band, ...]
    description: str = ""
    entity_noun: str = "customers"
    max_score: int = 150
    source: str = field(default="<memory>", compare=False)

    @property
    def points(self) -> pd.Series:
        """Points per unit of each signal, indexed by signal name."""
        return pd.Series({s.name: s.points for s in self.signals}, dtype="int64", name="points")

    def signal(self, name: str) -> Signal:
        """The signal called ``name``."""
        for signal in self.signals:
            if signal.name == name:
                return signal
        raise KeyError(f"Rule file {self.source} has no signal named {name!r}.")

    def with_points(self, points: dict[str, int], bands: tuple[Band, ...] | None = None) -> RuleSet:
        """A copy with new points (caps kept in units) and optionally new bands."""
        signals = tuple(replace(s, points=int(points.get(s.name, s.points))) for s in self.signals)
        out = replace(self, signals=signals, bands=self.bands if bands is None else bands)
        _validate(out)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The rule file as plain data (what :func:`save_rules` writes)."""
        signals = []
        for s in self.signals:
            entry: dict[str, Any] = {
                "name": s.name,
                "description": s.description,
                "column": s.column,
                "kind": s.kind,
                "points": s.points,
            }
            if s.kind == "flag":
                entry["condition"] = {"op": s.op, "value": _plain(s.value)}
            if s.kind == "category_equals":
                entry["value"] = _plain(s.value)
            if s.kind == "per_unit":
                entry["unit"] = _plain(s.unit)
                if s.unit_label:
                    entry["unit_label"] = s.unit_label
                if s.max_units is not None:  # not "cap": it would go stale when points change
                    entry["max_units"] = s.max_units
            if s.missing not in (False, "zero"):
                entry["missing"] = s.missing
            if s.excludes:
                entry["excludes"] = list(s.excludes)
            signals.append(entry)
        return {
            "name": self.name,
            "description": self.description,
            "entity_noun": self.entity_noun,
            "max_score": self.max_score,
            "bands": [{"name": b.name, "min": b.min} for b in self.bands],
            "signals": signals,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def rule_file_path(name: str | Path) -> Path:
    """Where a rule file is: a built-in name (``engagement``, ``lead``, ``purchase``) or a path."""
    path = Path(name)
    if path.suffix in {".yaml", ".yml", ".toml"} or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(2, "Rule file not found", str(path))
        return path
    packaged = resources.files("models").joinpath("rulefiles", f"{name}.yaml")
    if not packaged.is_file():
        raise RuleFileError(
            f"Unknown rule file {name!r}: give a path to a .yaml/.toml file or one of "
            f"{', '.join(BUILTIN_RULE_FILES)}."
        )
    return Path(str(packaged))


def load_rules(rules: str | Path | RuleSet = "engagement") -> RuleSet:
    """Parse and check a rule file.

    Args:
        rules: A built-in rule file name, a path to a YAML/TOML rule file, or a
            :class:`RuleSet` (returned as is).

    Returns:
        The rule set.

    Raises:
        RuleFileError: If the file does not follow the rule format (the message names
            the file and the signal).
    """
    if isinstance(rules, RuleSet):
        return rules
    path = rule_file_path(rules)
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise RuleFileError(f"Rule file {path} is not valid YAML/TOML: {exc}") from exc
    return parse_rules(data, source=str(path))


def parse_rules(data: Any, source: str = "<memory>") -> RuleSet:
    """Build a :class:`RuleSet` from the plain data of a rule file.

    Args:
        data: The decoded file (a mapping with ``signals`` and ``bands``).
        source: Name of the file, for error messages.

    Returns:
        The checked rule set.
    """
    if not isinstance(data, dict) or not data.get("signals"):
        raise RuleFileError(f"Rule file {source} must be a mapping with a list of signals.")
    signals = tuple(_parse_signal(entry, i, source) for i, entry in enumerate(data["signals"]))
    try:
        bands = tuple(Band(str(b["name"]), int(b["min"])) for b in data.get("bands") or ())
    except (KeyError, TypeError, ValueError) as exc:
        raise RuleFileError(f"Rule file {source}: every band needs a name and a min.") from exc
    rule_set = RuleSet(
        name=str(data.get("name") or Path(source).stem),
        signals=signals,
        bands=tuple(sorted(bands, key=lambda b: -b.min)),
        description=str(data.get("description") or ""),
        entity_noun=str(data.get("entity_noun") or "customers"),
        max_score=int(data.get("max_score", 150)),
        source=source,
    )
    _validate(rule_set)
    return rule_set


def _parse_signal(entry: Any, index: int, source: str) -> Signal:
    where = f"Rule file {source}, signal {index + 1}"
    if not isinstance(entry, dict):
        raise RuleFileError(f"{where} must be a mapping.")
    missing = [key for key in ("name", "column", "kind", "points") if key not in entry]
    if missing:
        raise RuleFileError(f"{where} lacks {', '.join(missing)}.")
    where = f"Rule file {source}, signal {entry['name']!r}"
    kind = entry["kind"]
    points = entry["points"]
    if isinstance(points, bool) or not isinstance(points, int | float) or points != int(points):
        raise RuleFileError(f"{where}: points must be a whole number, not {points!r}.")
    fields: dict[str, Any] = {
        "name": str(entry["name"]),
        "description": str(entry.get("description", "")),
        "column": str(entry["column"]),
        "kind": kind,
        "points": int(points),
        "excludes": tuple(entry.get("excludes") or ()),
    }
    if kind == "flag":
        condition = entry.get("condition")
        if not isinstance(condition, dict) or condition.get("op") not in OPERATORS:
            raise RuleFileError(
                f"{where}: a flag needs condition: {{op: one of {' '.join(OPERATORS)}, "
                "value: ...}."
            )
        value = condition.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleFileError(f"{where}: the condition value must be a number, not {value!r}.")
        fields |= {"op": condition["op"], "value": value}
        fields["missing"] = bool(entry.get("missing", False))
    elif kind == "category_equals":
        if "value" not in entry:
            raise RuleFileError(f"{where}: category_equals needs the value to match.")
        fields["value"] = entry["value"]
    elif kind == "per_unit":
        unit = float(entry.get("unit", 1))
        if not unit > 0:
            raise RuleFileError(f"{where}: unit must be positive, not {unit}.")
        fields |= {"unit": unit, "max_units": _max_units(entry, int(points), where)}
        fields["unit_label"] = str(entry.get("unit_label", ""))
        fields["missing"] = entry.get("missing", "zero")
        if fields["missing"] not in ("zero", "max"):
            raise RuleFileError(f"{where}: missing must be 'zero' or 'max'.")
        if fields["missing"] == "max" and fields["max_units"] is None:
            raise RuleFileError(f"{where}: missing: max needs a cap or max_units.")
    else:
        raise RuleFileError(
            f"{where}: kind must be flag, per_unit or category_equals, not {kind!r}."
        )
    return Signal(**fields)


def _max_units(entry: dict[str, Any], points: int, where: str) -> int | None:
    cap, max_units = entry.get("cap"), entry.get("max_units")
    if max_units is not None:
        if int(max_units) < 0:
            raise RuleFileError(f"{where}: max_units must be at least 0.")
        if cap is not None and abs(points) * int(max_units) != abs(int(cap)):
            raise RuleFileError(
                f"{where}: cap {cap} and max_units {max_units} disagree at {points} points "
                "per unit; give only one of them."
            )
        return int(max_units)
    if cap is None:
        return None
    if points == 0:
        raise RuleFileError(
            f"{where}: a 0-point signal cannot have a cap in points; use max_units."
        )
    return int(abs(int(cap)) // abs(points))


def _validate(rule_set: RuleSet) -> None:
    src = rule_set.source
    names = [s.name for s in rule_set.signals]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RuleFileError(f"Rule file {src} defines signal(s) {duplicated} more than once.")
    if not rule_set.bands or rule_set.bands[-1].min != 0:
        raise RuleFileError(f"Rule file {src}: the lowest band must start at 0.")
    if any(not 0 <= b.min <= rule_set.max_score for b in rule_set.bands):
        raise RuleFileError(f"Rule file {src}: band minimums must lie in 0..{rule_set.max_score}.")
    if len({b.min for b in rule_set.bands}) != len(rule_set.bands):
        raise RuleFileError(f"Rule file {src}: two bands start at the same score.")
    for signal in rule_set.signals:
        for other_name in signal.excludes:
            if other_name not in names:
                raise RuleFileError(
                    f"Rule file {src}: signal {signal.name!r} excludes unknown signal "
                    f"{other_name!r}."
                )
            other = rule_set.signal(other_name)
            if signal.points * other.points < 0 or abs(other.points) > abs(signal.points):
                raise RuleFileError(
                    f"Rule file {src}: {signal.name!r} ({signal.points} points) excludes "
                    f"{other_name!r} ({other.points} points), so it must be worth at least as "
                    "much, with the same sign (the higher of the two applies)."
                )


def save_rules(rule_set: RuleSet, path: str | Path) -> Path:
    """Write a rule set as a YAML rule file, atomically.

    Args:
        rule_set: The rules.
        path: Target ``.yaml`` file.

    Returns:
        The path written.
    """
    path = Path(path)
    header = f"# Rule file {rule_set.name!r}; points are per unit, caps are in units.\n"
    text = header + yaml.safe_dump(rule_set.to_dict(), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
    return path


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to a temporary file next to ``path``, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
