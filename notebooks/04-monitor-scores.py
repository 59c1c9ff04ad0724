# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Monitor the nightly scores
#
# What to look at after a few nightly runs. The notebook runs the real nightly Prefect
# flow (`pipelines.flows.nightly`) on three dates, against a throw-away Prefect server
# and a temporary MLflow SQLite store, then reads back what the runs left behind:
#
# 1. the run summaries (counts, bands, retraining decisions);
# 2. **band moves** between consecutive runs;
# 3. **score drift** (PSI of the probabilities against the model's validation
#    reference and against the previous run) and **feature drift** (PSI per feature);
# 4. the **MLflow runs** behind the registered versions and the **champion history**.
#
# A run retrains a target when it has no champion yet, when the champion is older than
# `model.retrain_max_age_days`, or when drift is flagged (the PSI of its scores above
# `schedule.psi_warn`); a new version becomes `@champion` only if it wins on the same
# out-of-time rows. The first run trains both models; the summaries say what happened
# after that.

# %% tags=["parameters"]
data_dir = None  # a folder written by features.synthetic.generate; None generates one
work_dir = None  # where outputs go; None: a new temporary folder
n_leads = 3_000
n_customers = 2_000
months = 12
seed = 3
run_dates = ["2025-11-01", "2025-11-08", "2025-11-22"]
min_positive_labels = 30
retrain_max_age_days = 30  # longer than the runs span: retraining here is drift-driven
psi_warn, psi_fail = 0.1, 0.25  # the usual reading of PSI: stable / moderate / major

# %%
# %matplotlib inline
import warnings

# tqdm (imported by MLflow) asks for ipywidgets, which a plain kernel does not need.
warnings.filterwarnings("ignore", message="IProgress not found")

import json
import logging
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from IPython.display import Markdown, display

from features.build import build_snapshots
from features.synthetic import generate, source_paths
from features.targets import TARGET_NAMES
from models import tracking, tracking_registry
from models.drift import psi, psi_table
from models.plots import band_moves_figure, band_transition_table, psi_figure
from pipelines import steps
from pipelines.context import build_context
from pipelines.outputs import list_partitions

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
# Prefect reads these when it is first imported (below, with the flow): quiet logs, and
# no telemetry from the throw-away server (it has no network here and would say so).
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

work = Path(work_dir or tempfile.mkdtemp(prefix="leadscore-04-"))
if data_dir is None:
    data_dir = generate(
        work / "data", n_leads=n_leads, n_customers=n_customers, months=months, seed=seed
    ).out_dir
data_dir = Path(data_dir)
config = {
    "sources": source_paths(data_dir),
    "output": {"dir": str(work / "output")},
    "model": {
        "min_positive_labels": min_positive_labels,
        "retrain_max_age_days": retrain_max_age_days,
    },
    # In production a PSI above psi_fail fails the run (after writing the scores); here
    # every run must finish so that the drift can be looked at below.
    "schedule": {"psi_warn": psi_warn, "psi_fail": 100.0},
    "seed": seed,
}
config_path = work / "leadscore.yaml"
config_path.write_text(yaml.safe_dump(config))
# The context of the last run date: its settings, and its inputs for the feature drift.
ctx = build_context(config_path, run_dates[-1])
settings = ctx.settings
print(f"outputs in {ctx.output_dir}, MLflow at {settings.tracking_uri}")

# %% [markdown]
# ## Three nightly runs
#
# `prefect_test_harness` starts a temporary Prefect server with its own database, so
# nothing is registered anywhere else; each call is a full nightly flow run.

# %%
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from pipelines.flows import nightly  # noqa: E402

with prefect_test_harness():
    results = [nightly(as_of=day, config_path=str(config_path)) for day in run_dates]
for result in results:
    print(f"{result.as_of}: {result.scored:,} scored; {result.retrain}")

# %% [markdown]
# ## What the runs wrote
#
# Each run leaves `summaries/<date>.json` and a score partition
# `scores/as_of=<date>/`; both are read back from disk here.

# %%
summaries = pd.DataFrame(
    [json.loads(p.read_text()) for p in sorted((ctx.output_dir / "summaries").glob("*.json"))]
).set_index("as_of")
summaries[["entities_in", "rows_out", "scored", "champions", "psi_status"]]

# %%
scores = {
    day: pd.read_parquet(path) for day, path in sorted(list_partitions(ctx.output_dir).items())
}
band_counts = pd.DataFrame({str(day): run["band"].value_counts() for day, run in scores.items()})
axes = band_counts.T.plot.bar(stacked=True, rot=0, figsize=(7, 3.5), title="Entities per band")

# %% [markdown]
# ## Band moves
#
# Rows: the band in the previous run (`new` for entities not scored then); columns:
# the band now. Off-diagonal cells (bold) are the entities whose owner sees a change;
# a retrained model moves many more of them than a quiet week does.

# %%
days = list(scores)
for before, after in zip(days, days[1:], strict=False):
    run = scores[after]
    table = band_transition_table(run["previous_band"], run["band"])
    display(band_moves_figure(table, title=f"Band moves {before} -> {after}"))

# %%
summaries["band_moves"].apply(pd.Series).fillna(0).astype(int).transpose()

# %% [markdown]
# ## Score drift
#
# PSI of each run's probabilities against the champion's validation probabilities
# (what the nightly drift check computes) and against the previous run. Below 0.1 is
# usually read as stable, 0.1 to 0.25 as a moderate shift, above 0.25 as a major one.

# %%
score_psi = {}
for before, after in zip([None, *days], days, strict=False):
    row = {
        f"{name} vs reference": value for name, value in summaries.loc[str(after), "psi"].items()
    }
    if before is not None:
        for target in TARGET_NAMES:
            column = f"{target}_probability"
            previous, current = scores[before][column].dropna(), scores[after][column].dropna()
            row[f"{target} probability vs previous run"] = psi(previous, current)
    score_psi[str(after)] = row
score_psi = pd.DataFrame(score_psi).transpose()
score_psi.round(3)

# %%
psi_figure(score_psi.iloc[-1], warn=psi_warn, fail=psi_fail, title=f"Score PSI, run {days[-1]}")

# %% [markdown]
# ## Feature drift
#
# The feature tables of the first and last run dates, rebuilt point in time, compared
# column by column. A feature that drifts a lot is the first place to look when the
# score PSI rises.

# %%
inputs = steps.load_inputs(ctx)
snapshots = build_snapshots(
    inputs.events, inputs.entities, [days[0], days[-1]], settings.feature_spec()
)
first = snapshots[snapshots["as_of"] == snapshots["as_of"].min()]
last = snapshots[snapshots["as_of"] == snapshots["as_of"].max()]
numeric = [
    c
    for c in snapshots.columns
    if c not in ("entity_id", "as_of") and snapshots[c].dtype.kind in "if"
]
feature_psi = psi_table(first, last, numeric)
psi_figure(
    feature_psi, warn=psi_warn, fail=psi_fail, top=15, title=f"Feature PSI, {days[0]} -> {days[-1]}"
)

# %% [markdown]
# ## MLflow runs and champion history
#
# Every training run is logged to MLflow with its metrics and artifacts, and its model
# registered; aliases say which version is `@champion` now. The summaries say which
# version scored on each date and why it was (or was not) retrained.

# %%
tracking.configure(settings.tracking_uri)
versions = tracking_registry.list_models()
versions[
    ["model", "version", "aliases", "created", "roc_auc", "rule_roc_auc", "ece", "lift_top_decile"]
]

# %%
label = versions["model"] + " v" + versions["version"].astype(str)
axes = versions.assign(version=label).plot.barh(
    x="version", y=["roc_auc", "rule_roc_auc"], xlim=(0.5, 1.0), figsize=(7, 3)
)
legend = axes.legend(loc="lower right", fontsize="small")
title = axes.set_title("Validation ROC AUC per registered version, model against rules")

# %%
history = pd.DataFrame(
    {
        target: summaries["champions"].map(lambda c, t=target: c[t])
        + summaries["retrain"].map(lambda r, t=target: f" ({r[t]})")
        for target in TARGET_NAMES
    }
)
display(
    Markdown(
        "\n".join(f"- **{day}**: {row.conversion}; {row.churn}" for day, row in history.iterrows())
    )
)
