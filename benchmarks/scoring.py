"""Benchmark batch scoring: probabilities, bands, exact TreeSHAP reasons and reason text.

Generates ``--entities`` synthetic entities with 60+ catalog-named features (8 event
types x 6 per-type features, the special features, two fit attributes), trains a
compact conversion and churn model on a ``--sample`` subsample, then times:

(a) probabilities, scores and bands only: the core arrays, and ``score_entities`` with
    ``with_reasons=False`` (previous band and score delta still joined);
(b) a nightly run where ``--moved`` of the entities changed: ``score_entities`` with the
    previous run (read back from Parquet), recomputing reasons only for the moved /
    re-banded ones, and (b') the next night with nobody moved (all reasons carried);
(c) exact reasons for everyone (``score_entities`` without a previous run);

each with entities per second and the peak resident memory of the process during the
phase (sampled every 20 ms from ``/proc/self/statm``). Each reason path is also run
through ``shap.TreeExplainer`` on a subsample and reported as a time ratio: shap's
explainer on a LightGBM booster (which calls LightGBM's ``pred_contrib`` itself) and
shap's own C++ TreeSHAP (forced through shap's internal trees, on a numeric twin model
because shap's tree parser cannot read LightGBM categorical splits).

A model-size study compares the compact default (``models.train.DEFAULT_PARAMS``),
shallower variants and an unconstrained model: test AUC, trees, ``pred_contrib`` and
plain prediction rows per second.

    .venv/bin/python benchmarks/scoring.py                 # 1M entities (~10 minutes)
    .venv/bin/python benchmarks/scoring.py --entities 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.spec import DEFAULT_EVENT_TYPES, FeatureSpec, feature_catalog  # noqa: E402
from models.bands import (  # noqa: E402
    BAND_METADATA_KEY,
    band_rule_for_models,
    choose_thresholds,
    score_from_probability,
)
from models.calibration import SigmoidCalibrator  # noqa: E402
from models.explain import concept_map, tree_contributions  # noqa: E402
from models.model import TrainedModel  # noqa: E402
from models.scoring import SCORED, score_entities  # noqa: E402

AS_OF = pd.Timestamp("2025-06-01", tz="UTC")
EVENT_TYPES = (
    "email_opened", "email_clicked", "page_view", "pricing_page_view",
    "content_download", "demo_request", "login", "session",
)  # fmt: skip
#: Mean events per 30 days of an average entity, per type.
RATES = dict(zip(EVENT_TYPES, (4.0, 1.0, 8.0, 0.6, 0.4, 0.05, 6.0, 5.0), strict=True))
INDUSTRIES = ("software", "retail", "finance", "health", "manufacturing", "education")
FALLBACK_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 15, "max_depth": 5,
    "min_child_samples": 50, "feature_fraction": 0.8, "bagging_fraction": 0.8,
    "bagging_freq": 1, "lambda_l2": 1.0, "cat_smooth": 10.0, "min_data_per_group": 50,
    "num_boost_round": 400, "early_stopping_rounds": 40,
}  # fmt: skip


def default_params() -> dict[str, Any]:
    """The training defaults of ``models.train`` (a local copy if it is not importable)."""
    try:
        from models.train import DEFAULT_PARAMS
    except ImportError:
        return dict(FALLBACK_PARAMS)
    return dict(DEFAULT_PARAMS)


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


# ---------------------------------------------------------------------- measuring


class PeakMemory:
    """Peak resident memory of this process while a block runs (sampled)."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        result = {"start_mb": self.rss() / 2**20, "peak_mb": 0.0}
        stop = threading.Event()
        peak = [self.rss()]

        def sample() -> None:
            while not stop.wait(self.interval):
                peak[0] = max(peak[0], self.rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        try:
            yield result
        finally:
            result["seconds"] = time.perf_counter() - started
            stop.set()
            sampler.join()
            result["peak_mb"] = max(peak[0], self.rss()) / 2**20


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def roundtrip(scored: pd.DataFrame) -> pd.DataFrame:
    """The scored frame as the next run reads it back (Parquet: Arrow strings); not timed."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scores.parquet"
        scored.to_parquet(path, index=False)
        return pd.read_parquet(path)


def shap_ratios(model: TrainedModel, twin: TrainedModel, frame: pd.DataFrame) -> dict[str, float]:
    """Time ratios of shap's explainers to LightGBM's ``pred_contrib`` on the same rows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import shap

        prepared = model.prepare(frame)
        _, ours = timed(lambda: tree_contributions(model, prepared, num_threads=2))
        explainer = shap.TreeExplainer(model.booster)
        _, wrapped = timed(lambda: explainer.shap_values(prepared))
        twin_prepared = twin.prepare(frame)
        twin_values, twin_ours = timed(lambda: tree_contributions(twin, twin_prepared, 2))
        own = shap.TreeExplainer(shap.TreeExplainer(twin.booster).model.trees)
        own_values, own_time = timed(lambda: own.shap_values(twin_prepared.to_numpy("float64")))
    return {
        "rows": len(frame),
        "pred_contrib_rows_s": len(frame) / ours,
        "shap_lightgbm_ratio": wrapped / ours,
        "shap_own_ratio": own_time / twin_ours,
        "shap_own_max_diff": float(np.abs(own_values - twin_values[:, :-1]).max()),
    }


def model_study(
    sample: pd.DataFrame, y: np.ndarray, test: pd.DataFrame, y_test: np.ndarray, seed: int
) -> list[dict[str, Any]]:
    """AUC and explanation speed of the compact default against other sizes."""
    variants = {
        "default (models.train)": {},
        "depth 4, lr 0.1": {"max_depth": 4, "learning_rate": 0.1},
        "depth 3, lr 0.1": {"max_depth": 3, "num_leaves": 8, "learning_rate": 0.1},
        "unconstrained": {
            "max_depth": -1, "num_leaves": 255, "min_child_samples": 20, "num_boost_round": 2000,
        },
    }  # fmt: skip
    rows = []
    probe = test.iloc[:5000]
    for name, override in variants.items():
        model, _, _, _ = train(sample, y, "conversion", {**default_params(), **override}, seed)
        auc = roc_auc_score(y_test, model.predict_margin(test))
        prepared = model.prepare(probe)
        _, contrib_s = timed(lambda m=model, p=prepared: tree_contributions(m, p, num_threads=2))
        prepared_all = model.prepare(test)
        _, predict_s = timed(lambda m=model, p=prepared_all: m.booster.predict(p, num_threads=2))
        depth = max(_depth(t["tree_structure"]) for t in model.booster.dump_model()["tree_info"])
        rows.append(
            {
                "model": name,
                "trees": model.booster.num_trees(),
                "max_depth": depth,
                "test_auc": auc,
                "pred_contrib_rows_s": len(probe) / contrib_s,
                "predict_rows_s": len(test) / predict_s,
            }
        )
        print(
            f"  {name:24s} trees {rows[-1]['trees']:4d}  depth {depth:2d}  AUC {auc:.4f}  "
            f"pred_contrib {rows[-1]['pred_contrib_rows_s']:9,.0f} rows/s  "
            f"predict {rows[-1]['predict_rows_s']:9,.0f} rows/s",
            flush=True,
        )
    return rows


def _depth(node: dict) -> int:
    if "leaf_index" in node:
        return 0
    return 1 + max(_depth(node["left_child"]), _depth(node["right_child"]))


# -------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000, help="training rows")
    parser.add_argument("--moved", type=float, default=0.10, help="share moved in (b)")
    parser.add_argument("--shap-rows", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--params", default="default", choices=("default", "depth4", "depth3"),
        help="compact model used for the scoring runs",
    )  # fmt: skip
    parser.add_argument("--skip-study", action="store_true")
    args = parser.parse_args()
    memory = PeakMemory()
    n = args.entities
    print(f"leadscore scoring benchmark: {n:,} entities, {os.cpu_count()} cores", flush=True)

    with memory.measure() as gen:
        frame = make_features(n, args.seed)
        rng = np.random.default_rng(args.seed + 1)
        entities = pd.DataFrame(
            {
                "entity_id": frame["entity_id"],
                "created_at": AS_OF - pd.to_timedelta(frame["tenure_days"], unit="D"),
                "crm_id": "crm_" + frame["entity_id"].str.slice(4),
                "consent": rng.random(n) > 0.02,
                "kind": np.where(rng.random(n) < 0.3, "customer", "lead"),
            }
        )
        points = (
            10 * frame["pricing_page_view_count_7d"] + 30 * frame["demo_request_count_30d"]
            + 2 * frame["page_view_count_30d"]
        ).clip(0, 150)  # fmt: skip
        rules = pd.DataFrame(
            {
                "entity_id": frame["entity_id"],
                "rule_score": points,
                "rule_band": np.select([points >= 60, points >= 25], ["hot", "warm"], "cold"),
            }
        )
    n_features = frame.shape[1] - 2
    print(f"data: {n_features} features, built in {gen['seconds']:.1f} s", flush=True)

    train_rows = np.random.default_rng(args.seed + 2).choice(n, min(args.sample, n), replace=False)
    sample = frame.iloc[train_rows].reset_index(drop=True)
    params = {
        "default": {},
        "depth4": {"max_depth": 4, "learning_rate": 0.1},
        "depth3": {"max_depth": 3, "num_leaves": 8, "learning_rate": 0.1},
    }[args.params]
    models: dict[str, TrainedModel] = {}
    twins: dict[str, TrainedModel] = {}
    for i, target in enumerate(("conversion", "churn")):
        y = make_labels(sample, target, args.seed + 10 + i)
        model, auc, y_val, p_val = train(
            sample, y, target, {**default_params(), **params}, args.seed
        )
        model.metadata[BAND_METADATA_KEY] = choose_thresholds(y_val, p_val, 0.10).to_dict()
        models[target] = model
        numeric = sample.drop(columns=["industry", "nps_class"])
        twins[target], _, _, _ = train(
            numeric, y, target, {**default_params(), **params}, args.seed
        )
        print(
            f"{target} model ({args.params}): {model.booster.num_trees()} trees, validation "
            f"AUC {auc:.4f}, band threshold {model.metadata[BAND_METADATA_KEY]['threshold']:.3f} "
            f"(lift {model.metadata[BAND_METADATA_KEY]['lift']:.2f})",
            flush=True,
        )
    rule = band_rule_for_models(models)
    catalog = feature_catalog(
        feature_spec(), list(EVENT_TYPES), {"industry": "category", "company_size": "float64"}
    )
    unknown = set(models["conversion"].feature_names) - {d.name for d in catalog}
    assert not unknown, f"benchmark features outside the catalog: {sorted(unknown)}"
    concept_count = len(concept_map(models["conversion"].feature_names, catalog).concepts)
    print(f"{concept_count} concepts; band rule: {rule.describe()}", flush=True)

    if not args.skip_study:
        print("\nmodel size study (conversion, trained on the sample, tested on 50k others):")
        y_sample = make_labels(sample, "conversion", args.seed + 10)
        test = make_features(50_000, args.seed + 99)
        model_study(
            sample, y_sample, test, make_labels(test, "conversion", args.seed + 98), args.seed
        )

    results: dict[str, dict[str, float]] = {}

    def score(
        previous: pd.DataFrame | None, features: pd.DataFrame, name: str, with_reasons: bool = True
    ) -> pd.DataFrame:
        with memory.measure() as m:
            out = score_entities(
                features, entities, models, rules, rule, catalog, previous, AS_OF,
                tolerance=2.0, num_threads=2, with_reasons=with_reasons,
            )  # fmt: skip
        is_fresh = (out["reasons_computed_at"] == out["scored_at"]).to_numpy(bool)
        fresh = int(is_fresh.sum())
        results[name] = {**m, "fresh": fresh, "rows": len(out)}
        for target, kind in (("conversion", "lead"), ("churn", "customer")):
            results[name][target] = int((is_fresh & (out["kind"] == kind).to_numpy(bool)).sum())
        print(
            f"{name}: {len(out):,} entities in {m['seconds']:.1f} s = "
            f"{len(out) / m['seconds']:,.0f} entities/s; reasons computed for {fresh:,}; "
            f"peak RSS {m['peak_mb']:,.0f} MB "
            f"(start {m['start_mb']:,.0f} MB)",
            flush=True,
        )
        return out

    print("")
    with memory.measure() as core:
        for target, kind in (("conversion", "lead"), ("churn", "customer")):
            model = models[target]
            p = model.predict_proba(frame)
            score_from_probability(p, model.reference_scores, kind)
        lead_p = models["conversion"].predict_proba(frame)
        rule.assign(lead_p, np.full(n, np.nan))
    print(
        f"core arrays only (both models on all {n:,} rows, scores, bands): "
        f"{core['seconds']:.1f} s = {2 * n / core['seconds']:,.0f} model-rows/s; "
        f"peak RSS {core['peak_mb']:,.0f} MB",
        flush=True,
    )
    full = roundtrip(score(None, frame, "(c) exact reasons for everyone"))
    moved = frame.copy()
    chosen = np.random.default_rng(args.seed + 3).random(n) < args.moved
    for column in ("pricing_page_view_count_7d", "login_count_30d", "demo_request_count_30d"):
        moved.loc[chosen, column] = moved.loc[chosen, column] + rng.integers(1, 5, chosen.sum())
    moved.loc[chosen, "login_days_since_last"] = rng.uniform(0, 3, chosen.sum())
    nightly = roundtrip(score(full, moved, f"(b) nightly, {args.moved:.0%} moved"))
    score(nightly, moved, "(a) probabilities and bands only", with_reasons=False)
    score(nightly, moved, "(b') next night, nobody moved (all reasons carried over)")
    scored = nightly["status"] == SCORED
    print(f"    scored {scored.sum():,}, not scored {(~scored).sum():,} "
          f"({nightly.loc[~scored, 'status'].value_counts().to_dict()})")  # fmt: skip

    print("\nshap.TreeExplainer against LightGBM pred_contrib (same rows, 2 threads):")
    probe = frame.sample(min(args.shap_rows, n), random_state=args.seed)
    ratios = {}
    for target in ("conversion", "churn"):
        r = ratios[target] = shap_ratios(models[target], twins[target], probe)
        print(
            f"  {target}: pred_contrib {r['pred_contrib_rows_s']:,.0f} rows/s; "
            f"shap.TreeExplainer(booster) x{r['shap_lightgbm_ratio']:.2f} the time (it calls "
            f"pred_contrib); shap's own C++ TreeSHAP x{r['shap_own_ratio']:.2f} "
            f"(max |diff| {r['shap_own_max_diff']:.1e})",
            flush=True,
        )
    for name, res in results.items():
        if not res["fresh"]:
            continue
        ours = sum(res[t] / ratios[t]["pred_contrib_rows_s"] for t in ratios)
        via = {
            key: sum(res[t] / ratios[t]["pred_contrib_rows_s"] * ratios[t][key] for t in ratios)
            for key in ("shap_lightgbm_ratio", "shap_own_ratio")
        }
        wrapped, own = via["shap_lightgbm_ratio"], via["shap_own_ratio"]
        print(
            f"  {name}: SHAP part ~{ours:.0f} s with pred_contrib; ~{wrapped:.0f} s through "
            f"shap.TreeExplainer(booster); ~{own:.0f} s through shap's own TreeSHAP "
            "(estimated from the subsample rates)"
        )


if __name__ == "__main__":
    main()
