"""Synthetic entities for the scoring benchmark: features, known-model labels, training.

Features carry the catalog's names (8 event types x 6 per-type features, the special
features, two fit attributes); labels come from a known logistic model of a handful of
them, so a trained model's AUC has a ceiling to compare against.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.spec import DEFAULT_EVENT_TYPES, FeatureSpec  # noqa: E402
from models.calibration import SigmoidCalibrator  # noqa: E402
from models.model import TrainedModel  # noqa: E402

AS_OF = pd.Timestamp("2025-06-01", tz="UTC")
EVENT_TYPES = (
    "email_opened", "email_clicked", "page_view", "pricing_page_view",
    "content_download", "demo_request", "login", "session",
)  # fmt: skip
#: Mean events per 30 days of an average entity, per type.
RATES = dict(zip(EVENT_TYPES, (4.0, 1.0, 8.0, 0.6, 0.4, 0.05, 6.0, 5.0), strict=True))
INDUSTRIES = ("software", "retail", "finance", "health", "manufacturing", "education")


# --------------------------------------------------------------------------- data


def feature_spec() -> FeatureSpec:
    chosen = tuple(e for e in DEFAULT_EVENT_TYPES if e.name in EVENT_TYPES)
    return FeatureSpec(event_types=chosen)


def make_features(n: int, seed: int) -> pd.DataFrame:
    """Plausible engagement features: per-entity activity drives every event type."""
    rng = np.random.default_rng(seed)
    activity = rng.gamma(0.8, 1.25, n)
    columns: dict[str, np.ndarray] = {"entity_id": np.array([f"ent_{i:07d}" for i in range(n)])}
    recency = []
    for name in EVENT_TYPES:
        rate = activity * RATES[name] * rng.lognormal(0, 0.5, n)
        c90 = rng.poisson(3 * rate)
        c30 = rng.binomial(c90, 0.4)
        c7 = rng.binomial(c30, 0.3)
        since = np.where(c90 > 0, rng.exponential(90 / (c90 + 1)), np.nan)
        since = np.where(
            c90 == 0, np.where(rng.random(n) < 0.5, np.nan, rng.uniform(90, 400, n)), since
        )
        recency.append(since)
        columns |= {
            f"{name}_count_7d": c7.astype("float64"),
            f"{name}_count_30d": c30.astype("float64"),
            f"{name}_count_90d": c90.astype("float64"),
            f"{name}_days_since_last": since,
            f"{name}_decayed": c30 * 0.6 + rng.gamma(1.0, 0.3, n) * (c90 > 0),
            f"{name}_trend": (c30 - rng.binomial(c90 - c30, 0.5)).astype("float64"),
        }
    nps = np.where(rng.random(n) < 0.3, rng.integers(0, 11, n), np.nan).astype("float64")
    sessions = columns["session_count_30d"]
    minutes = sessions * rng.gamma(2.0, 6.0, n)
    emails = rng.poisson(6, n) + 1
    columns |= {
        "tenure_days": rng.uniform(1, 1500, n),
        "days_since_last_event": _nanmin_rows(np.column_stack(recency)),
        "active_days_30d": np.minimum(30, rng.poisson(activity * 5)).astype("float64"),
        "login_active_days_28d": np.minimum(28, columns["login_count_30d"]),
        "login_active_weeks_4w": np.minimum(4, np.ceil(columns["login_count_30d"] / 2)),
        "session_minutes_30d": minutes,
        "avg_session_minutes_30d": np.where(
            sessions > 0, minutes / np.maximum(sessions, 1), np.nan
        ),
        "key_features_used_30d": rng.binomial(12, np.minimum(1, activity / 4)).astype("float64"),
        "nps_latest": nps,
        "nps_class": np.select(
            [nps >= 9, nps >= 7, nps >= 0], ["promoter", "passive", "detractor"], "none"
        ),
        "open_tickets": rng.poisson(0.3, n).astype("float64"),
        "purchase_amount_90d": np.where(rng.random(n) < 0.1, rng.gamma(2, 300, n), 0.0),
        "email_delivery_rate_90d": rng.beta(30, 1, n),
        "email_open_rate_90d": columns["email_opened_count_90d"] / (emails + 10),
        "email_click_rate_90d": columns["email_clicked_count_90d"] / (emails + 10),
        "email_click_to_open_rate_90d": np.where(
            columns["email_opened_count_90d"] > 0,
            columns["email_clicked_count_90d"] / np.maximum(columns["email_opened_count_90d"], 1),
            np.nan,
        ),
        "email_unsubscribe_rate_90d": rng.beta(1, 200, n),
        "industry": rng.choice(INDUSTRIES, n, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.1]),
        "company_size": np.round(rng.lognormal(4, 1.5, n)),
    }
    frame = pd.DataFrame(columns)
    for name in ("industry", "nps_class"):
        frame[name] = frame[name].astype("category")
    frame["as_of"] = AS_OF
    return frame


def _nanmin_rows(values: np.ndarray) -> np.ndarray:
    """Row minimum ignoring NaN; NaN for rows without any value (never active)."""
    filled = np.where(np.isnan(values), np.inf, values).min(axis=1)
    return np.where(np.isinf(filled), np.nan, filled)


def make_labels(frame: pd.DataFrame, target: str, seed: int) -> np.ndarray:
    """Outcomes from a known logistic model of a handful of features."""
    rng = np.random.default_rng(seed)
    f = frame
    industry = f["industry"].astype("string").to_numpy()
    if target == "conversion":
        logit = (
            -3.2
            + 0.6 * np.log1p(f["pricing_page_view_count_7d"])
            + 1.2 * (f["demo_request_count_30d"] > 0)
            + 0.3 * np.log1p(f["content_download_count_90d"])
            - 0.01 * np.nan_to_num(f["page_view_days_since_last"], nan=120)
            + 0.4 * (industry == "software")
            - 0.2 * np.log10(1 + f["company_size"])
        )
    else:
        logit = (
            -2.0
            - 0.5 * np.log1p(f["login_count_30d"])
            + 0.02 * np.nan_to_num(f["login_days_since_last"], nan=200).clip(0, 100)
            - 0.3 * np.log1p(f["key_features_used_30d"])
            + 0.4 * f["open_tickets"]
            - 0.15 * np.nan_to_num(f["nps_latest"] - 7, nan=0)
        )
    return (rng.random(len(f)) < 1 / (1 + np.exp(-logit.to_numpy(dtype=float)))).astype(int)


# ------------------------------------------------------------------------- models


def train(
    frame: pd.DataFrame, y: np.ndarray, target: str, params: dict[str, Any], seed: int
) -> tuple[TrainedModel, float, np.ndarray, np.ndarray]:
    """Train on 60%, early-stop and calibrate on 20%, validate on 20% (random: synthetic)."""
    n = len(frame)
    order = np.random.default_rng(seed).permutation(n)
    tr, ca, va = order[: int(0.6 * n)], order[int(0.6 * n) : int(0.8 * n)], order[int(0.8 * n) :]
    names = [c for c in frame.columns if c not in ("entity_id", "as_of")]
    levels = {
        c: [str(v) for v in frame[c].cat.categories] for c in names if frame[c].dtype == "category"
    }
    model = TrainedModel(target, None, None, names, levels)  # type: ignore[arg-type]
    x = model.prepare(frame)
    rounds, stop = (
        int(params.pop("num_boost_round", 400)),
        int(params.pop("early_stopping_rounds", 40)),
    )
    booster_params = {
        **params,
        "objective": "binary",
        "verbose": -1,
        "num_threads": 2,
        "seed": seed,
    }
    booster = lgb.train(
        booster_params,
        lgb.Dataset(x.iloc[tr], y[tr]),
        rounds,
        valid_sets=[lgb.Dataset(x.iloc[ca], y[ca])],
        callbacks=[lgb.early_stopping(stop, verbose=False)],
    )
    model.booster = lgb.Booster(
        model_str=booster.model_to_string(num_iteration=booster.best_iteration)
    )
    calibration_margin = model.booster.predict(x.iloc[ca], raw_score=True)
    model.calibrator = SigmoidCalibrator().fit(calibration_margin, y[ca])
    p_valid = model.predict_proba(frame.iloc[va])
    model.reference_scores = np.sort(p_valid)
    model.metadata = {"registered_version": "bench"}
    return model, roc_auc_score(y[va], p_valid), y[va], p_valid
