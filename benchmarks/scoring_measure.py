"""Measuring for the scoring benchmark: peak memory, timing, shap ratios, model sizes."""

from __future__ import annotations

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

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring_data import train  # noqa: E402
from models.explain import tree_contributions  # noqa: E402
from models.model import TrainedModel  # noqa: E402
from models.train_guards import DEFAULT_PARAMS  # noqa: E402


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
        model, _, _, _ = train(sample, y, "conversion", {**DEFAULT_PARAMS, **override}, seed)
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
