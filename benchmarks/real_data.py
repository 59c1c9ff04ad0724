"""Real-data results: model, rule score and recalibrated rules on the shared datasets.

For each dataset, on one split (out-of-time where the data has time): the LightGBM
model of ``models.train.train_model`` (calibrated), and wherever the data has what the
rules read, the default rule score and the rule score recalibrated on the training
fold; ROC AUC, PR AUC, log loss, Brier score, ECE and top-decile lift, with the
published baselines of the datasets' READMEs beside them.

* X Education leads: one snapshot without dates, so a stratified split (NOT
  out-of-time). The columns the sales team fills in during or after the sale, and the
  vendor scores of unknown timing, are excluded with the reason printed; the leakage
  guard's single-feature AUCs of those columns are shown, and a model trained with
  them is reported for comparison only.
* Bank marketing (``bank-additional-full``): rows are in time order; months are
  numbered from that order, the split is by month, and ``duration`` (known only after
  the call) is dropped.
* CDNOW: purchases are the events, the product's feature table is built at monthly
  rolling cutoffs, churn = no purchase in the next 90 days. The published baseline,
  the BG/NBD model (Fader, Hardie & Lee 2005), is fitted here by maximum likelihood
  (scipy; ``lifetimes`` is not a dependency) and checked against the paper's estimates.

    .venv/bin/python benchmarks/real_data.py [--datasets PATH] [--out FILE]

``--datasets`` defaults to the environment variable ``LEADSCORE_DATASETS``.
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

from benchmarks.real_data_cdnow import cdnow  # noqa: E402
from benchmarks.real_data_report import (  # noqa: E402
    METRICS,
    SEED,
    DatasetResult,
    Row,
    model_rows,
    pick_metrics,
    progress,
    render_markdown,
)
from models.evaluate import evaluate  # noqa: E402
from models.rules import RuleScore, atomic_write_text  # noqa: E402
from models.train import train_model  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "real_data.md"
#: Bank marketing `month` values in calendar order.
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")

_SALES = "filled in by the sales team during or after the sales process (dataset README)"
_VENDOR = "vendor score of unknown timing, null for 46% of leads: not known to precede the outcome"
#: X Education columns left out of the honest model, and why.
X_EDUCATION_EXCLUDED = {
    "Tags": _SALES,
    "Lead Quality": _SALES,
    "Lead Profile": _SALES,
    "Last Activity": _SALES,
    "Last Notable Activity": _SALES,
    "Asymmetrique Activity Index": _VENDOR,
    "Asymmetrique Profile Index": _VENDOR,
    "Asymmetrique Activity Score": _VENDOR,
    "Asymmetrique Profile Score": _VENDOR,
}
X_EDUCATION_IDS = ("Prospect ID", "Lead Number")

# --- X Education -------------------------------------------------------------------------


def x_education_rule_columns(leads: pd.DataFrame) -> pd.DataFrame:
    """The lead rules' columns mapped from the X Education snapshot (a stated proxy).

    The CRM export has lifetime counters, not dated events: page views are visits x
    pages per visit, a form submission is a lead that came in through a form, the free
    e-book is a content download and "Do Not Email" an unsubscribe; what it does not
    record counts 0, and recency is unknown, so no inactivity decay (0 days).
    """
    page_views = (leads["TotalVisits"] * leads["Page Views Per Visit"]).round().fillna(0)
    forms = {"Landing Page Submission", "Lead Add Form", "Quick Add Form"}
    mapped = pd.DataFrame(
        {
            "page_view_count_90d": page_views,
            "form_submit_count_90d": leads["Lead Origin"].isin(forms).astype("float64"),
            "content_download_count_90d": (
                leads["A free copy of Mastering The Interview"] == "Yes"
            ).astype("float64"),
            "email_unsubscribed_count_90d": (leads["Do Not Email"] == "Yes").astype("float64"),
            "days_since_last_event": 0.0,
        },
        index=leads.index,
    )
    for column in ("email_clicked_count_90d", "email_opened_count_90d", "form_error_count_90d",
                   "webinar_attended_count_90d", "demo_request_count_90d"):  # fmt: skip
        mapped[column] = 0.0
    return mapped


def x_education(folder: Path) -> DatasetResult:
    """Conversion of X Education leads; stratified split, leaky columns excluded."""
    leads = pd.read_parquet(folder / "x_education_leads" / "leads.parquet")
    y = leads["Converted"].to_numpy("int64")
    # "Select" is an untouched drop-down: missing, not an answer.
    raw = leads.drop(columns=["Converted", *X_EDUCATION_IDS]).replace("Select", pd.NA)
    out = DatasetResult(
        "X Education leads (conversion)",
        "stratified 60/20/20 split of one snapshot: **not out-of-time** (the data has no dates)",
    )
    common = {"horizon_days": 30, "seed": SEED, "rule_model": RuleScore("lead")}
    with_leaks = raw.join(x_education_rule_columns(leads))
    # Allowed here only so the comparison model trains; the guard's AUCs are still reported.
    excluded = list(X_EDUCATION_EXCLUDED)
    leaky = train_model(with_leaks, y, None, "conversion", allow_leaky_features=excluded, **common)
    guard = leaky.leakage_aucs
    honest = train_model(with_leaks.drop(columns=excluded), y, None, "conversion", **common)
    out.rows = model_rows(honest)
    out.rows.append(
        Row("model WITH the excluded columns (comparison only)",
            pick_metrics(leaky.metrics["model"]), int(leaky.metrics["model"]["n"]),
            "optimistic: uses what sales wrote after contact")
    )  # fmt: skip
    out.rows.append(Row("published: class projects on this file", dict.fromkeys(METRICS, np.nan),
                        0, "no AUC published; accuracy about 0.86 (XGBoost, Duc Nguyen), "
                        "mostly with `Tags` kept (optimistic)"))  # fmt: skip
    caught = {c: bool(guard[c] > 0.95) for c in X_EDUCATION_EXCLUDED}
    out.extras = {"guard_auc": guard.to_dict(), "caught_by_guard": caught, "result": honest}
    for column, reason in X_EDUCATION_EXCLUDED.items():
        verdict = "caught by the guard" if caught[column] else "below the 0.95 guard"
        out.notes.append(
            f"Excluded `{column}`: {reason}; single-feature AUC {guard[column]:.3f} ({verdict})."
        )
    out.notes += [
        "The leakage guard alone would not stop this data (largest single-feature AUC "
        f"{guard.max():.3f}, `{guard.index[0]}`), so the columns are excluded by name.",
        "Rule rows: `lead.yaml` on a mapped proxy (page views = visits x pages per visit; "
        "form submission = came in through a form; e-book = content download; Do Not Email "
        "= unsubscribe; recency unknown, so no decay). Rule columns are also model inputs.",
    ]
    return out


# --- Bank marketing ----------------------------------------------------------------------


def bank_month_starts(months: pd.Series, first_year: int = 2008) -> pd.Series:
    """Month start of every row of a time-ordered file that only gives the month name."""
    number = months.str.lower().map({m: i + 1 for i, m in enumerate(MONTHS)}).to_numpy()
    year = first_year + np.concatenate([[0], np.cumsum(np.diff(number) < 0)])
    stamps = pd.to_datetime({"year": year, "month": number, "day": np.ones_like(year)}, utc=True)
    return pd.Series(stamps, index=months.index)


def _latest_cutoffs_with(counts: pd.Series, share: float) -> int:
    """Fewest latest cutoffs whose rows reach ``share`` of ``counts.sum()``."""
    cumulative = counts.sort_index(ascending=False).cumsum()
    return int(np.searchsorted(cumulative.to_numpy(), share * counts.sum()) + 1)


#: Bank marketing's economic context columns: one value per period, so they name the regime.
BANK_MACRO = ("emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m", "nr.employed")


def bank_rolling(
    features: pd.DataFrame, y: np.ndarray, as_of: pd.Series, months: pd.Index, every: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Retrain before every ``every`` validation months (rolling origin); labels, probabilities."""
    counts = as_of.value_counts().sort_index()
    labels, probabilities = [], []
    for start in range(0, len(months), every):
        block = months[start : start + every]
        known = (as_of <= block[-1]).to_numpy()
        before = counts[counts.index < block[0]]
        # Calibrate (and stop early) on the latest months holding about 2,000 calls.
        n_calib = _latest_cutoffs_with(before, min(1.0, 2000 / before.sum()))
        result = train_model(
            features[known], y[known], as_of[known], "conversion", horizon_days=1, seed=SEED,
            validation_cutoffs=len(block), calibration_cutoffs=n_calib,
        )  # fmt: skip
        labels.append(result.validation["label"].to_numpy())
        probabilities.append(result.validation["p_model"].to_numpy())
    return np.concatenate(labels), np.concatenate(probabilities)


def bank_marketing(folder: Path) -> DatasetResult:
    """Term-deposit subscription per call, split by month, without ``duration``."""
    calls = pd.read_parquet(folder / "bank_marketing" / "bank_additional_full.parquet")
    y = (calls["y"] == "yes").to_numpy("int64")
    as_of = bank_month_starts(calls["month"])
    counts = as_of.value_counts()
    n_valid = _latest_cutoffs_with(counts, 0.20)
    n_calib = _latest_cutoffs_with(counts.sort_index().iloc[:-n_valid], 0.10 / 0.80)
    features = calls.drop(columns=["y", "duration"])
    # A call's outcome is known at the call: a 1-day horizon only keeps folds apart.
    split = {"horizon_days": 1, "seed": SEED, "validation_cutoffs": n_valid,
             "calibration_cutoffs": n_calib}  # fmt: skip
    result = train_model(features, y, as_of, "conversion", **split)
    no_macro = train_model(features.drop(columns=list(BANK_MACRO)), y, as_of, "conversion", **split)
    progress(f"bank marketing: retraining every 3 of the {n_valid} validation months")
    months = counts.sort_index().index[-n_valid:]
    y_rolling, p_rolling = bank_rolling(features, y, as_of, months)
    cut = result.split.describe()["cutoffs"]
    out = DatasetResult(
        "Bank marketing (conversion)",
        f"out-of-time by month (file order = time order): train {cut['train'][0][:7]}.."
        f"{cut['train'][-1][:7]}, calibrate {cut['calibration'][0][:7]}.."
        f"{cut['calibration'][-1][:7]}, validate {cut['validation'][0][:7]}.."
        f"{cut['validation'][-1][:7]} (the latest months holding at least 20% of the calls)",
    )
    n = int(result.metrics["model"]["n"])
    out.rows = [
        Row("model (LightGBM, calibrated), one split", pick_metrics(result.metrics["model"]), n,
            f"early stopping kept {result.model.metadata['best_iteration']} trees; every "
            "validation call lands in the same leaf of each (its economic columns lie outside "
            "the training months' range), so the score is constant"),
        Row("model retrained every 3 validation months (rolling origin)",
            pick_metrics(evaluate(y_rolling, p_rolling)), len(y_rolling),
            "trained on every earlier month, calibrated on the latest ones holding about "
            "2,000 calls, then scores the next 3 months"),
        Row("rule score", dict.fromkeys(METRICS, np.nan), 0,
            "n/a: calls without an event history, nothing the rules read"),
        Row("published: Moro, Cortez & Rita 2014 (neural network)",
            {**dict.fromkeys(METRICS, np.nan), "roc_auc": 0.80}, 0,
            "rolling-window test after July 2012 on the bank's fuller data (22 selected "
            "features): orientation, not the same rows"),
    ]  # fmt: skip
    out.notes += [
        "`duration` (call length, known only after the call) is dropped; every other column "
        "is kept. Years are numbered from the month sequence (May 2008 .. Nov 2010).",
        f"Validation outcome rate {result.metrics['model']['base_rate']:.3f} against "
        f"{y[result.split.train].mean():.3f} in training: later campaigns convert far more "
        "often, so calibration fitted on earlier months cannot be right (high ECE).",
        "Dropping the 5 economic columns does not rescue the single split: AUC "
        f"{no_macro.metrics['model']['roc_auc']:.3f} on the same rows (what converted in 2008 "
        "does not in the later campaigns). Moro et al. also retrained on a rolling window.",
    ]
    out.extras = {"result": result}
    return out


RUNNERS = {"x_education": x_education, "bank_marketing": bank_marketing, "cdnow": cdnow}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--datasets", type=Path, default=os.environ.get("LEADSCORE_DATASETS"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="*", choices=list(RUNNERS), default=list(RUNNERS))
    args = parser.parse_args(argv)
    if args.datasets is None or not Path(args.datasets).is_dir():
        parser.error(
            f"Datasets folder {args.datasets} not found: pass --datasets PATH or set "
            "LEADSCORE_DATASETS to the folder holding x_education_leads/, bank_marketing/, cdnow/."
        )
    started = time.perf_counter()
    results = []
    for name in args.only:
        progress(f"{name}: start")
        begin = time.perf_counter()
        result = RUNNERS[name](Path(args.datasets))
        result.seconds = time.perf_counter() - begin
        progress(f"{name}: done in {result.seconds:.0f} s")
        results.append(result)
    text = render_markdown(results, time.perf_counter() - started)
    atomic_write_text(args.out, text)
    print(text)
    progress(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
