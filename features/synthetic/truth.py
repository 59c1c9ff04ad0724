"""The known outcome model of the synthetic data: signals, weights and probabilities.

Outcomes of the synthetic generator are drawn from a logistic model over *observable*
point-in-time signals. Every signal reads one column of the feature table of
``docs/ARCHITECTURE.md`` (``login_active_days_28d``, ``form_submit_count_30d``...),
so the same code gives the true probability from the generator's own daily counts
and from a feature table built by :func:`features.build.build_features`: a perfect
model of the features reaches the best achievable AUC and no more.

Signals use the kinds of the rule files in ``models/rulefiles``: ``flag`` (1 when a
condition holds), ``per_unit`` (``floor(value / unit)`` units, at most ``max_units``)
and ``category_equals``. Weights are effects on the log-odds; negative is protective.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

Target = Literal["conversion", "churn"]
SignalKind = Literal["flag", "per_unit", "category_equals"]

#: Days after the start before the first draw: every window of the signals is filled.
WARM_UP_DAYS = 60
HORIZON_DAYS: dict[str, int] = {"conversion": 30, "churn": 60}
#: Draw dates step by the horizon, so label windows tile and never overlap.
DRAW_STEP_DAYS: dict[str, int] = {"conversion": 30, "churn": 60}

_COMPARE = {">=": operator.ge, ">": operator.gt, "==": operator.eq, "<=": operator.le}


@dataclass(frozen=True)
class Signal:
    """One term of the true log-odds, read from one feature table column.

    Attributes:
        name: Short name (the key in ``generator.json``'s ``*_signal_weights``).
        column: Feature table column it reads.
        kind: ``flag``, ``per_unit`` or ``category_equals``.
        weight: Effect on the log-odds per unit (flags and categories: one unit).
        description: What the signal means, in words.
        op: Comparison of a ``flag`` (``>=``, ``>``, ``==``, ``<=``).
        threshold: Right-hand side of the comparison of a ``flag``.
        unit: Size of one unit of a ``per_unit`` signal (``floor(value / unit)``).
        max_units: Cap on the units of a ``per_unit`` signal.
        value: Category that a ``category_equals`` signal looks for.
        missing: Units when the column is missing (NaN): flags of inactivity count a
            never-active entity as inactive.
        excluded_by: Name of a signal that, when present, zeroes this one (a daily
            login replaces the weekly login term).
    """

    name: str
    column: str
    kind: SignalKind
    weight: float
    description: str
    op: str = ">="
    threshold: float = 1.0
    unit: float = 1.0
    max_units: int | None = None
    value: str | None = None
    missing: float = 0.0
    excluded_by: str | None = None

    def units(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """Units of this signal for each row (float64; 0 when absent)."""
        if self.kind == "category_equals":
            text = pd.Series(values).astype("string")
            return (text == self.value).fillna(False).to_numpy(dtype="float64")
        numbers = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype="float64")
        missing = np.isnan(numbers)
        filled = np.where(missing, 0.0, numbers)
        if self.kind == "flag":
            units = _COMPARE[self.op](filled, self.threshold).astype("float64")
        else:
            units = np.floor(filled / self.unit)
            if self.max_units is not None:
                units = np.minimum(units, self.max_units)
        return np.where(missing, self.missing, units)


@dataclass(frozen=True)
class TargetModel:
    """The true model of one target: ``p = sigmoid(intercept + signals + fit effects)``.

    Attributes:
        target: ``conversion`` or ``churn``.
        intercept: Log-odds of an entity with no signal and reference fit attributes.
        signals: The engagement signals.
        fit_weights: Per fit attribute column, the effect of each of its values
            (values not listed have effect 0).
    """

    target: Target
    intercept: float
    signals: tuple[Signal, ...]
    fit_weights: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        """Feature table columns the model reads (signals first, then fit attributes)."""
        seen = dict.fromkeys(s.column for s in self.signals)
        return list(seen) + [c for c in self.fit_weights if c not in seen]

    def signal_units(self, columns: Mapping[str, Any]) -> pd.DataFrame:
        """Units of every signal, after exclusions, one column per signal name.

        Args:
            columns: Feature table (or a mapping of column name to values).

        Returns:
            One float64 column per signal, in the order of :attr:`signals`.
        """
        units = {s.name: s.units(_column(columns, s.column)) for s in self.signals}
        for signal in self.signals:
            if signal.excluded_by is not None:
                units[signal.name] = np.where(
                    units[signal.excluded_by] > 0, 0.0, units[signal.name]
                )
        return pd.DataFrame(units)

    def log_odds(self, columns: Mapping[str, Any]) -> np.ndarray:
        """True log-odds of every row of a feature table (or mapping of columns)."""
        units = self.signal_units(columns)
        total = np.full(len(units), self.intercept, dtype="float64")
        for signal in self.signals:
            total += signal.weight * units[signal.name].to_numpy()
        for column, effects in self.fit_weights.items():
            text = pd.Series(_column(columns, column)).astype("string")
            mapped = text.map(effects).astype("float64").fillna(0.0)
            total += mapped.to_numpy()
        return total

    def probability(self, columns: Mapping[str, Any]) -> np.ndarray:
        """True probability of the outcome within the horizon, for every row."""
        return sigmoid(self.log_odds(columns))

    def to_json(self) -> dict[str, Any]:
        """JSON-safe description (stored in ``generator.json``)."""
        return {
            "target": self.target,
            "intercept": self.intercept,
            "signals": [asdict(s) for s in self.signals],
            "fit_weights": self.fit_weights,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TargetModel:
        """The model described by :meth:`to_json`."""
        return cls(
            target=data["target"],
            intercept=float(data["intercept"]),
            signals=tuple(Signal(**s) for s in data["signals"]),
            fit_weights={c: dict(e) for c, e in data["fit_weights"].items()},
        )


def sigmoid(log_odds: np.ndarray) -> np.ndarray:
    """The logistic function, element-wise."""
    return 1.0 / (1.0 + np.exp(-np.asarray(log_odds, dtype="float64")))


def _column(columns: Mapping[str, Any], name: str) -> Any:
    try:
        return columns[name]
    except KeyError:
        available = list(columns.keys()) if hasattr(columns, "keys") else []
        raise KeyError(
            f"The true model reads column {name!r}, which the table given lacks "
            f"(it has {available[:12]}{'...' if len(available) > 12 else ''})."
        ) from None


# fmt: off
CHURN_MODEL = TargetModel(
    target="churn",
    intercept=-1.8,
    signals=(
        Signal("daily_login", "login_active_days_28d", "flag", -1.6,
               "Logged in on at least 20 of the last 28 days.", op=">=", threshold=20),
        Signal("weekly_login", "login_active_weeks_4w", "flag", -0.9,
               "Logged in during each of the last 4 weeks (and not daily).", op="==",
               threshold=4, excluded_by="daily_login"),
        Signal("key_features", "key_features_used_30d", "per_unit", -0.25,
               "Per distinct key feature used in the last 30 days, at most 5.", max_units=5),
        Signal("session_time", "avg_session_minutes_30d", "per_unit", -0.12,
               "Per full 10 minutes of average session over the last 30 days, at most 5.",
               unit=10.0, max_units=5),
        Signal("inactive_30d", "days_since_last_event", "flag", 1.3,
               "No event of any kind for 30 days or more (or never).", op=">=", threshold=30,
               missing=1.0),
        Signal("nps_promoter", "nps_class", "category_equals", -0.6,
               "Latest NPS answer 9-10.", value="promoter"),
        Signal("nps_detractor", "nps_class", "category_equals", 0.75,
               "Latest NPS answer 0-6.", value="detractor"),
        Signal("open_ticket", "open_tickets", "per_unit", 0.35,
               "Per support ticket still open, at most 5.", max_units=5),
    ),
    fit_weights={
        "company_size": {"1-10": 1.6, "11-50": 0.8, "51-200": 0.0, "201-1000": -0.8,
                         "1000+": -1.6},
        "industry": {"software": 0.0, "finance": -0.9, "healthcare": -0.45, "retail": 1.0,
                     "manufacturing": 0.3, "education": 0.6},
    },
)

CONVERSION_MODEL = TargetModel(
    target="conversion",
    intercept=-5.0,
    signals=(
        Signal("form_submit", "form_submit_count_30d", "per_unit", 0.7,
               "Per form submitted in the last 30 days, at most 3.", max_units=3),
        Signal("demo_request", "demo_request_count_30d", "flag", 2.0,
               "Asked for a demo in the last 30 days.", op=">=", threshold=1),
        Signal("pricing_page", "pricing_page_view_count_7d", "per_unit", 0.5,
               "Per pricing page visit in the last 7 days, at most 3.", max_units=3),
        Signal("webinar_attended", "webinar_attended_count_30d", "flag", 0.9,
               "Attended a webinar in the last 30 days.", op=">=", threshold=1),
        Signal("content_download", "content_download_count_30d", "per_unit", 0.3,
               "Per content download in the last 30 days, at most 3.", max_units=3),
        Signal("email_click", "email_clicked_count_30d", "per_unit", 0.25,
               "Per email link click in the last 30 days, at most 4.", max_units=4),
    ),
    fit_weights={
        "job_level": {"individual": 0.0, "manager": 0.25, "director": 0.55, "vp": 0.8,
                      "c_level": 1.0},
        "company_size": {"1-10": -0.6, "11-50": -0.2, "51-200": 0.0, "201-1000": 0.3,
                         "1000+": 0.5},
        "lead_source": {"organic": 0.3, "paid_search": 0.0, "paid_social": -0.5,
                        "referral": 0.9, "event": 0.5, "outbound": -0.3},
    },
)

# fmt: on

TRUE_MODELS: dict[str, TargetModel] = {"conversion": CONVERSION_MODEL, "churn": CHURN_MODEL}


def draw_days(target: str, n_days: int) -> list[int]:
    """Day offsets (from the start) of the draw dates whose window ends by ``n_days``."""
    step, horizon = DRAW_STEP_DAYS[target], HORIZON_DAYS[target]
    return list(range(WARM_UP_DAYS, n_days - horizon + 1, step))


def weights_summary() -> dict[str, Any]:
    """The ``generator.json`` entries of the true models."""
    summary: dict[str, Any] = {}
    for target, model in TRUE_MODELS.items():
        summary[f"{target}_intercept"] = model.intercept
        summary[f"{target}_signal_weights"] = {s.name: s.weight for s in model.signals}
        summary[f"{target}_fit_weights"] = model.fit_weights
    summary["models"] = {target: model.to_json() for target, model in TRUE_MODELS.items()}
    summary["horizon_days"] = dict(HORIZON_DAYS)
    summary["draw_step_days"] = dict(DRAW_STEP_DAYS)
    summary["warm_up_days"] = WARM_UP_DAYS
    return summary
