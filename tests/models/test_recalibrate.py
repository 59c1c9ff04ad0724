from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from models.recalibrate import L2_GRID, RecalibrationResult, fit_rules, recalibrate
from models.rules import RuleScore, load_rules, score_points, signal_units

#: Churn log-odds per signal unit (the synthetic generator's weights).
TRUE_CHURN_WEIGHTS = {
    "daily_login": -1.6,
    "weekly_login": -0.9,
    "key_features": -0.25,
    "session_time": -0.12,
    "inactive_30d": 1.3,
    "nps_promoter": -0.6,
    "nps_detractor": 0.75,
    "open_tickets": 0.35,
}


def simulate_customers(
    seed: int,
    n_customers: int,
    n_cutoffs: int,
    weights: dict[str, float] = TRUE_CHURN_WEIGHTS,
    nps_choices: tuple[str, ...] = ("promoter", "passive", "detractor", "none"),
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Monthly feature snapshots and churn drawn from known logit weights on the signals."""
    rng = np.random.default_rng(seed)
    n = n_customers * n_cutoffs
    activity = rng.normal(size=n)  # a latent habit, so the signals are correlated
    days = rng.binomial(28, 1 / (1 + np.exp(-(1.2 * activity - 0.6))))
    weeks = rng.binomial(4, 1 / (1 + np.exp(-(1.2 * activity + 1.0))))
    features = np.minimum(rng.poisson(np.exp(0.6 + 0.4 * activity)), 8)
    minutes = np.where(rng.random(n) < 0.15, np.nan, rng.exponential(20 * np.exp(0.3 * activity)))
    idle = np.where(rng.random(n) < 0.05, np.nan, rng.exponential(12 * np.exp(-0.6 * activity)))
    nps = rng.choice(list(nps_choices), n)
    tickets = rng.poisson(1.0, n)
    cutoffs = pd.date_range("2025-01-01", periods=n_cutoffs, freq="30D", tz="UTC")
    frame = pd.DataFrame(
        {
            "entity_id": [f"c{i:05d}" for i in np.tile(np.arange(n_customers), n_cutoffs)],
            "as_of": np.repeat(cutoffs, n_customers),
            "login_active_days_28d": days,
            "login_active_weeks_4w": weeks,
            "key_features_used_30d": features,
            "avg_session_minutes_30d": minutes,
            "days_since_last_event": idle,
            "nps_class": pd.Categorical(nps),
            "open_tickets": tickets,
        }
    )
    daily = days >= 20
    signals = {  # written out here, independently of models.rules
        "daily_login": daily,
        "weekly_login": (weeks == 4) & ~daily,
        "key_features": np.minimum(features, 5),
        "session_time": np.minimum(np.floor(np.nan_to_num(minutes) / 10), 5),
        "inactive_30d": np.isnan(idle) | (idle >= 30),
        "nps_promoter": nps == "promoter",
        "nps_detractor": nps == "detractor",
        "open_tickets": np.minimum(tickets, 5),
    }
    logit = -0.8 + sum(weights[name] * np.asarray(v, float) for name, v in signals.items())
    p_churn = 1 / (1 + np.exp(-logit))
    return frame, (rng.random(n) < p_churn).astype("int64"), p_churn


@pytest.fixture(scope="module")
def known_weights() -> tuple[pd.DataFrame, np.ndarray, RecalibrationResult]:
    frame, churn, p_churn = simulate_customers(seed=7, n_customers=4000, n_cutoffs=6)
    result = recalibrate(
        frame,
        churn,
        frame["as_of"],
        "engagement",
        "churn",
        seed=3,
        n_bootstrap=20,
        model_scores=p_churn,
    )
    return frame, churn, result


def test_recalibrated_points_rank_signals_in_true_order_and_beat_the_defaults(known_weights):
    _, _, result = known_weights
    table = result.table.set_index("signal")
    true_engagement = [-TRUE_CHURN_WEIGHTS[name] for name in table.index]
    assert spearmanr(table["new_points"], true_engagement).statistic >= 0.9
    holdout = result.metrics
    assert holdout["recalibrated_rules"]["roc_auc"] > holdout["old_rules"]["roc_auc"]
    chosen = result.settings["l2"]
    aucs = {float(k): v for k, v in result.settings["l2_validation_auc"].items()}
    assert chosen in L2_GRID and aucs[chosen] >= max(aucs.values()) - 1e-3
    # The model column here is the true probability: no rule should beat it.
    assert holdout["model"]["roc_auc"] >= holdout["recalibrated_rules"]["roc_auc"]


def test_structure_and_caps_are_kept_and_points_are_whole(known_weights):
    _, _, result = known_weights
    old, new = result.old_rules, result.rules
    for before, after in zip(old.signals, new.signals, strict=True):
        assert (after.name, after.column, after.kind, after.max_units, after.excludes) == (
            before.name,
            before.column,
            before.kind,
            before.max_units,
            before.excludes,
        )
        assert isinstance(after.points, int)
    assert new.signal("daily_login").points >= new.signal("weekly_login").points
    assert (result.table["ci_low"] <= result.table["ci_high"]).all()


def test_new_bands_keep_the_old_band_shares_on_training_rows(known_weights):
    frame, _, result = known_weights
    training = frame[frame["as_of"].dt.strftime("%Y-%m-%d").isin(result.split["training_cutoffs"])]
    assert len(training) == result.split["n_training"]
    units = signal_units(result.old_rules, training)
    minimums = [b.min for b in result.rules.bands]
    assert minimums == sorted(minimums, reverse=True) and minimums[-1] == 0
    for old_band, new_band in zip(
        result.old_rules.bands[:-1], result.rules.bands[:-1], strict=True
    ):
        old_share = np.mean(score_points(result.old_rules, units) >= old_band.min)
        new_share = np.mean(score_points(result.rules, units) >= new_band.min)
        assert abs(old_share - new_share) <= 0.05


def test_fit_rules_is_the_training_half_of_recalibrate(known_weights):
    frame, churn, result = known_weights
    training = frame["as_of"].dt.strftime("%Y-%m-%d").isin(result.split["training_cutoffs"])
    rules = fit_rules(frame[training], churn[training.to_numpy()], "engagement", "churn",
                      as_of=frame.loc[training, "as_of"], seed=3, n_bootstrap=20)  # fmt: skip
    assert rules.points.to_dict() == result.rules.points.to_dict()
    assert rules.bands == result.rules.bands
    scores = RuleScore(rules).fit(frame).predict(frame)
    assert scores.min() >= 0 and scores.max() <= 150
    with pytest.raises(ValueError, match="both outcomes"):
        fit_rules(frame.head(5), np.zeros(5))


def test_same_data_and_seed_give_the_same_points():
    frame, churn, _ = simulate_customers(seed=1, n_customers=800, n_cutoffs=4)
    runs = [recalibrate(frame, churn, frame["as_of"], seed=11, n_bootstrap=8) for _ in range(2)]
    pd.testing.assert_frame_equal(runs[0].table, runs[1].table)
    assert runs[0].rules == runs[1].rules
    assert runs[0].flat_metrics() == runs[1].flat_metrics()


def test_signs_are_kept_unless_the_data_clearly_contradicts_them():
    # Promoters churn like everyone else (no effect), open tickets come from engaged
    # customers (they churn less): the first keeps its sign, the second flips.
    weights = TRUE_CHURN_WEIGHTS | {"nps_promoter": 0.0, "open_tickets": -0.6}
    frame, churn, _ = simulate_customers(seed=2, n_customers=2500, n_cutoffs=4, weights=weights)
    result = recalibrate(frame, churn, frame["as_of"], seed=5, n_bootstrap=20)
    table = result.table.set_index("signal")
    assert table.loc["nps_promoter", "new_points"] >= 0
    assert table.loc["open_tickets", "status"] == "flipped"
    assert table.loc["open_tickets", "new_points"] > 0
    assert "changes sign" in table.loc["open_tickets", "evidence"]


def test_a_signal_nobody_has_keeps_its_points_and_says_why():
    frame, churn, _ = simulate_customers(
        seed=4, n_customers=800, n_cutoffs=4, nps_choices=("none",)
    )
    result = recalibrate(frame, churn, frame["as_of"], seed=5, n_bootstrap=5)
    row = result.table.set_index("signal").loc["nps_promoter"]
    assert row["status"] == "not estimable" and row["new_points"] == row["old_points"]
    assert "cannot judge" in row["evidence"]


def test_write_produces_the_report_files(known_weights, tmp_path):
    frame, _, result = known_weights
    paths = result.write(tmp_path / "out")
    assert sorted(paths) == ["metrics", "report", "rules", "table"]
    table = pd.read_csv(paths["table"])
    assert {"signal", "old_points", "new_points", "ci_low", "ci_high", "evidence"} <= set(table)
    reloaded = load_rules(paths["rules"])
    assert reloaded.points.to_dict() == result.rules.points.to_dict()
    assert reloaded.bands == result.rules.bands
    np.testing.assert_array_equal(
        RuleScore(paths["rules"]).predict(frame),
        score_points(result.rules, signal_units(result.rules, frame)),
    )
    metrics = json.loads(paths["metrics"].read_text())
    assert set(metrics["metrics"]) == {"old_rules", "recalibrated_rules", "model"}
    report = paths["report"].read_text()
    for row in result.table.itertuples():
        assert row.evidence in report
    assert "## Bands" in report and "ROC AUC" in report
    assert not list(Path(tmp_path / "out").glob("*.tmp"))  # atomic writes leave nothing behind


def test_markdown_speaks_plain_english(known_weights):
    _, _, result = known_weights
    report = result.to_markdown()
    weekly = result.table.set_index("signal").loc["weekly_login"]
    assert f"Weekly login: 25 -> {weekly['new_points']} points." in report
    assert "points per key feature" in report
    assert "churned" in report and "of the time against" in report
    assert "def " not in report and "_login" not in report.split("## Side by side")[0]


def test_label_horizon_drops_training_cutoffs_whose_labels_reach_the_holdout():
    frame, churn, _ = simulate_customers(seed=6, n_customers=600, n_cutoffs=6)
    plain = recalibrate(frame, churn, frame["as_of"], seed=1, n_bootstrap=0)
    purged = recalibrate(frame, churn, frame["as_of"], seed=1, n_bootstrap=0, label_horizon_days=60)
    assert plain.split["holdout_cutoffs"] == purged.split["holdout_cutoffs"]
    first_holdout = pd.Timestamp(plain.split["holdout_cutoffs"][0], tz="UTC")
    kept = [
        c
        for c in plain.split["training_cutoffs"]
        if pd.Timestamp(c, tz="UTC") + pd.Timedelta(days=60) <= first_holdout
    ]
    assert purged.split["training_cutoffs"] == kept
    assert len(kept) < len(plain.split["training_cutoffs"])
    with pytest.raises(ValueError, match="label window"):
        recalibrate(frame, churn, frame["as_of"], n_bootstrap=0, label_horizon_days=400)


def test_bad_inputs_are_explained():
    frame, churn, _ = simulate_customers(seed=8, n_customers=200, n_cutoffs=3)
    one_cutoff = frame.assign(as_of=frame["as_of"].min())
    with pytest.raises(ValueError, match="2 or more cutoffs"):
        recalibrate(one_cutoff, churn, one_cutoff["as_of"], n_bootstrap=0)
    with pytest.raises(ValueError, match=r"labels must be 0 or 1; rows \[0\]"):
        recalibrate(frame, np.r_[np.nan, churn[1:]], frame["as_of"], n_bootstrap=0)
    with pytest.raises(ValueError, match="'churn' or 'conversion'"):
        recalibrate(frame, churn, frame["as_of"], target="upsell", n_bootstrap=0)
    with pytest.raises(ValueError, match="as_of has"):
        recalibrate(frame, churn, frame["as_of"][:10], n_bootstrap=0)


# --- CDNOW purchase log (real data) -----------------------------------------------------


def cdnow_snapshots(purchases: pd.DataFrame, cutoffs: pd.DatetimeIndex, horizon_days: int):
    """Purchase features before each cutoff and churn (no purchase in the next window)."""
    events = purchases.rename(columns={"customer_id": "entity_id", "date": "event_time"})
    events["event_time"] = events["event_time"].dt.tz_localize("UTC")
    frames = []
    for cutoff in cutoffs:
        past = events[events["event_time"] < cutoff]
        age = (cutoff - past["event_time"]).dt.total_seconds() / 86400
        past = past.assign(
            in_30d=age <= 30,
            in_90d=age <= 90,
            amount_90d=past["dollar_value"].where(age <= 90, 0.0),
            age=age,
        )
        frame = (
            past.groupby("entity_id")
            .agg(
                purchase_count_30d=("in_30d", "sum"),
                purchase_count_90d=("in_90d", "sum"),
                purchase_amount_90d=("amount_90d", "sum"),
                purchase_days_since_last=("age", "min"),
            )
            .reset_index()
        )
        window_end = cutoff + pd.Timedelta(days=horizon_days)
        future = events[(events["event_time"] > cutoff) & (events["event_time"] <= window_end)]
        frame["as_of"] = cutoff
        frame["label"] = (~frame["entity_id"].isin(future["entity_id"])).astype("int64")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.realdata
@pytest.mark.slow
def test_cdnow_recalibration_report_is_produced(tmp_path):
    folder = os.environ.get("LEADSCORE_DATASETS")
    path = Path(folder or "/nonexistent") / "cdnow" / "cdnow_master.parquet"
    if not path.exists():
        message = "LEADSCORE_DATASETS does not hold cdnow/cdnow_master.parquet"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    purchases = pd.read_parquet(path)
    cutoffs = pd.date_range("1997-04-01", "1997-12-01", freq="MS", tz="UTC")
    snapshots = cdnow_snapshots(purchases, cutoffs, horizon_days=26 * 7)
    result = recalibrate(
        snapshots,
        snapshots["label"],
        snapshots["as_of"],
        "purchase",
        "churn",
        seed=0,
        n_bootstrap=20,
        label_horizon_days=26 * 7,
    )
    paths = result.write(tmp_path)
    report = paths["report"].read_text()
    assert "Recent purchase" in report or "recent purchase" in report.lower()
    assert result.metrics["recalibrated_rules"]["roc_auc"] > 0.5
    assert result.metrics["old_rules"]["roc_auc"] > 0.5


def test_recalibration_is_logged_to_mlflow_with_points_metrics_and_report(
    known_weights, local_tracking
):
    import mlflow.artifacts
    from mlflow import MlflowClient

    from models import tracking

    frame, _, result = known_weights
    run_id = tracking.log_recalibration(result, {"seed": 3})
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["rules"] == "engagement" and run.data.tags["target"] == "churn"
    assert run.data.params["recalibration.seed"] == "3"
    metrics = run.data.metrics
    assert metrics["recalibrated_rules_roc_auc"] == pytest.approx(
        result.metrics["recalibrated_rules"]["roc_auc"]
    )
    for row in result.table.itertuples():
        assert metrics[f"points_new.{row.signal}"] == row.new_points
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"recalibration_engagement_churn.md", "engagement_recalibrated_churn.yaml"} <= names
    # Aggregates only: no entity id reaches the store.
    local = Path(mlflow.artifacts.download_artifacts(run_id=run_id))
    text = "".join(p.read_text() for p in local.iterdir() if p.is_file())
    assert not any(entity in text for entity in frame["entity_id"].astype(str).unique()[:200])
