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
phase (sampled every 20 ms from ``/proc/self/statm``). The reasons' TreeSHAP
(:mod:`models.treeshap`) is timed against LightGBM's ``pred_contrib`` on the same rows,
and checked to give the same values (to 1e-12; not the same bits: per-feature sums
are added once per tree). Each reason path is also run
through ``shap.TreeExplainer`` on a subsample and reported as a time ratio: shap's
explainer on a LightGBM booster (which calls LightGBM's ``pred_contrib`` itself) and
shap's own C++ TreeSHAP (forced through shap's internal trees, on a numeric twin model
because shap's tree parser cannot read LightGBM categorical splits).

A model-size study compares the compact default (``models.train_guards.DEFAULT_PARAMS``),
shallower variants and an unconstrained model: test AUC, trees, ``pred_contrib`` and
plain prediction rows per second.

    .venv/bin/python benchmarks/scoring.py                 # 1M entities (~10 minutes)
    .venv/bin/python benchmarks/scoring.py --entities 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring_data import (  # noqa: E402
    AS_OF,
    EVENT_TYPES,
    feature_spec,
    make_features,
    make_labels,
    train,
)
from benchmarks.scoring_measure import PeakMemory, model_study, roundtrip, shap_ratios  # noqa: E402
from features.spec import feature_catalog  # noqa: E402
from models.bands import (  # noqa: E402
    BAND_METADATA_KEY,
    band_rule_for_models,
    choose_thresholds,
    score_from_probability,
)
from models.concepts import concept_map  # noqa: E402
from models.entity_status import SCORED  # noqa: E402
from models.model import TrainedModel  # noqa: E402
from models.scoring import score_entities  # noqa: E402
from models.train_guards import DEFAULT_PARAMS  # noqa: E402
from models.treeshap import contributions  # noqa: E402


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
        model, auc, y_val, p_val = train(sample, y, target, {**DEFAULT_PARAMS, **params}, args.seed)
        model.metadata[BAND_METADATA_KEY] = choose_thresholds(y_val, p_val, 0.10).to_dict()
        models[target] = model
        numeric = sample.drop(columns=["industry", "nps_class"])
        twins[target], _, _, _ = train(numeric, y, target, {**DEFAULT_PARAMS, **params}, args.seed)
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
            ).frame  # fmt: skip
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
    print("\nmodels.treeshap against LightGBM pred_contrib (same rows, 2 threads):")
    for target in ("conversion", "churn"):
        r = treeshap_ratio(models[target], probe)
        print(
            f"  {target}: LightGBM {r['lightgbm_rows_s']:,.0f} rows/s, models.treeshap "
            f"{r['treeshap_rows_s']:,.0f} rows/s (x{r['speedup']:.1f}); "
            f"the same to 1e-12: {r['same']}",
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


def treeshap_ratio(model: TrainedModel, rows: pd.DataFrame) -> dict[str, float]:
    """Rows per second of LightGBM's pred_contrib and of models.treeshap on the same matrix."""
    matrix = model.inputs(rows).rows(np.arange(len(rows)))
    contributions(model.booster, matrix[:10], 2)  # compiled (or loaded) before timing
    values, rate = {}, {}
    for name, run in (
        ("lightgbm", lambda: model.booster.predict(matrix, pred_contrib=True, num_threads=2)),
        ("treeshap", lambda: contributions(model.booster, matrix, 2)),
    ):
        began = time.perf_counter()
        values[name] = run()
        rate[name] = len(matrix) / (time.perf_counter() - began)
    same = np.allclose(values["treeshap"], values["lightgbm"], rtol=1e-12, atol=1e-12)
    return {
        "lightgbm_rows_s": rate["lightgbm"],
        "treeshap_rows_s": rate["treeshap"],
        "speedup": rate["treeshap"] / rate["lightgbm"],
        "same": same,
    }


if __name__ == "__main__":
    main()
