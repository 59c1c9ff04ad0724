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
# # 03 · Recalibrate the engagement rules
#
# The customer **engagement score** is a hand-written rule file
# (`models/rulefiles/engagement.yaml`): points for daily or weekly logins, key
# features, session time, NPS, open tickets... Marketers own it; this notebook checks
# it against what actually happened and proposes new points, with
# `models.recalibrate.recalibrate` (the function behind `leadscore recalibrate`):
#
# 1. build labelled churn snapshots (point-in-time features, churn within the horizon);
# 2. learn new points on the older cutoffs and compare **old against new points**, with
#    each new value's bootstrap interval;
# 3. check both on the latest cutoffs held out by time (ROC AUC, lift);
# 4. **choose band thresholds** and read their **per-band outcome rates**.

# %% tags=["parameters"]
data_dir = None  # a folder written by features.synthetic.generate; None generates one
work_dir = None  # where outputs go; None: a new temporary folder
n_leads = 3_000
n_customers = 2_000
months = 12
seed = 3
as_of = "2025-12-01"
rules = "engagement"  # a built-in rule file name or a path to one
n_bootstrap = 60  # replicates per bootstrap; 200 for a report you will act on

# %%
# %matplotlib inline
import logging
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from features.labels import label_definition
from features.synthetic import generate, source_paths
from features.targets import CHURN
from models.bands import choose_thresholds
from models.evaluate import band_outcome_rates
from models.plots import points_comparison_figure, roc_curve_figure
from models.recalibrate import recalibrate
from models.rules import RuleScore
from pipelines import steps, training
from pipelines.context import RunContext, parse_as_of
from pipelines.settings import load_settings

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
pd.set_option("display.max_colwidth", 160)

work = Path(work_dir or tempfile.mkdtemp(prefix="leadscore-03-"))
if data_dir is None:
    data_dir = generate(
        work / "data", n_leads=n_leads, n_customers=n_customers, months=months, seed=seed
    ).out_dir
data_dir = Path(data_dir)
settings = load_settings(
    sources=source_paths(data_dir),
    output={"dir": str(work / "output")},
    seed=seed,
)
ctx = RunContext(settings, parse_as_of(as_of, settings.schedule.timezone))
horizon = settings.labels.horizon_days(CHURN.name)
inputs = steps.load_inputs(ctx)

# %% [markdown]
# ## Labelled snapshots
#
# The same point-in-time training frame the churn model trains on.

# %%
frame = training.training_frame(ctx, inputs, CHURN)
print(label_definition(CHURN.name, horizon))
frame.groupby("as_of")["label"].agg(customers="size", churned="sum", rate="mean")

# %% [markdown]
# ## Recalibrate
#
# The latest quarter of the cutoffs is held out (training cutoffs whose label window
# reaches into it are dropped); points are learned on the rest. The report below is
# the one written for marketers.

# %%
result = recalibrate(
    frame,
    frame["label"],
    frame["as_of"],
    rules,
    CHURN.name,
    seed=settings.seed,
    n_bootstrap=n_bootstrap,
    label_horizon_days=horizon,
)
display(Markdown(result.to_markdown()))

# %% [markdown]
# ## Old against new points
#
# Grey: the points as written; blue: the recalibrated points with their bootstrap
# interval. A sign only flips when the data say so beyond doubt.

# %%
points_comparison_figure(result.table, title=f"{rules} rules: old against recalibrated points")

# %%
result.table[["signal", "old_points", "new_points", "ci_low", "ci_high", "status", "evidence"]]

# %% [markdown]
# ## On the held-out cutoffs
#
# Rule points measure engagement, so the churn risk they imply is their opposite: the
# ROC below ranks customers by `-points`.

# %%
holdout = frame[frame["as_of"].isin(pd.to_datetime(result.split["holdout_cutoffs"], utc=True))]
churned = holdout["label"].to_numpy()
old_points = RuleScore(result.old_rules).predict(holdout)
new_points = RuleScore(result.rules).predict(holdout)
display(pd.DataFrame(result.metrics).T[["roc_auc", "pr_auc", "lift_top_decile"]].round(4))
roc_curve_figure(
    churned,
    {"old rules (-points)": -old_points, "recalibrated rules (-points)": -new_points},
    title="Churn on the held-out cutoffs",
)

# %% [markdown]
# ## Band thresholds and their outcome rates
#
# The recalibrated bands keep the share of customers in each band the old rules had, so
# team workloads stay the same; only who lands where changes. The churn rate per band
# is what the bands promise: `at-risk` should churn clearly more than `high`.

# %%
bands = pd.DataFrame(
    {
        "old minimum points": {b.name: b.min for b in result.old_rules.bands},
        "new minimum points": {b.name: b.min for b in result.rules.bands},
    }
)
for name, rule_set in (("old", result.old_rules), ("new", result.rules)):
    rates = band_outcome_rates(churned, RuleScore(rule_set).predict_band(holdout))
    bands[f"{name} customers"] = pd.Series({b: r["n"] for b, r in rates.items()})
    bands[f"{name} churn rate"] = pd.Series({b: r["rate"] for b, r in rates.items()})
bands.style.format({"old churn rate": "{:.1%}", "new churn rate": "{:.1%}"}, precision=0)

# %%
axes = bands[["old churn rate", "new churn rate"]].plot.bar(
    rot=0, figsize=(7, 3.5), title="Churn rate per band on the held-out cutoffs"
)

# %% [markdown]
# ### Choosing the at-risk threshold by volume
#
# Customer success can call a fixed number of customers. `choose_thresholds` (the
# function that sets the model bands) picks the threshold that flags a given share of
# customers and reports the churn rate (precision) and lift in that group. Here it runs
# on the recalibrated rule risk `-points`: the threshold reads as "at most this many
# points is at-risk".

# %%
choices = []
for share in (0.05, 0.10, 0.20, 0.30):
    choice = choose_thresholds(churned, -new_points, share)
    choices.append(
        {
            "share flagged": choice.share_flagged,
            "at-risk when points <=": -choice.threshold,
            "churn rate in band": choice.precision,
            "lift": choice.lift,
        }
    )
pd.DataFrame(choices).style.format(
    {"share flagged": "{:.1%}", "churn rate in band": "{:.1%}", "lift": "{:.2f}"}
)

# %% [markdown]
# The new rule file, the report, the table and the metrics can be written for review
# with `result.write(folder)`:

# %%
paths = result.write(ctx.output_dir / "recalibration")
{name: str(path) for name, path in paths.items()}
