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
# # 02 · Train and explain the conversion model
#
# This notebook trains the lead **conversion** model the way the nightly run does and
# looks at it the way a data scientist would before trusting it:
#
# 1. build point-in-time training snapshots (one row per lead and monthly cutoff,
#    label = converted within the horizon after the cutoff);
# 2. train LightGBM with a time split, early stopping and calibration
#    (`models.train.train_model`), next to the rule score it has to beat;
# 3. compare model and rules on the latest out-of-time fold: **ROC**, **lift**,
#    **calibration**;
# 4. global explanation: the **SHAP beeswarm** of the validation fold;
# 5. the reasons of **three individual leads exactly as sales see them**, produced by
#    the scoring step itself (`pipelines.steps.score`, which calls
#    `models.scoring.score_entities` and `models.explain`).
#
# Nothing here is MLflow-logged; `leadscore train` does that with the same functions.

# %% tags=["parameters"]
data_dir = None  # a folder written by features.synthetic.generate; None generates one
work_dir = None  # where outputs go; None: a new temporary folder
n_leads = 3_000
n_customers = 2_000
months = 12
seed = 3
as_of = "2025-12-01"  # the run date: training cutoffs end one horizon before it
min_positive_labels = 30  # small generated data has few conversions per cutoff

# %%
# %matplotlib inline
import logging
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from features.labels import label_definition
from features.synthetic import generate, source_paths
from features.targets import CHURN, CONVERSION
from models.evaluate import calibration_curve_figure, lift_chart_figure
from models.plots import roc_curve_figure, shap_explanation
from models.reason_text import crm_reason_text
from models.rules import RuleScore
from models.train import train_model
from pipelines import steps, training
from pipelines.context import RunContext, parse_as_of
from pipelines.settings import load_settings

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
pd.set_option("display.max_colwidth", 200)

work = Path(work_dir or tempfile.mkdtemp(prefix="leadscore-02-"))
if data_dir is None:
    data_dir = generate(
        work / "data", n_leads=n_leads, n_customers=n_customers, months=months, seed=seed
    ).out_dir
data_dir = Path(data_dir)
settings = load_settings(
    sources=source_paths(data_dir),
    output={"dir": str(work / "output")},
    model={"min_positive_labels": min_positive_labels},
    seed=seed,
)
ctx = RunContext(settings, parse_as_of(as_of, settings.schedule.timezone))
inputs = steps.load_inputs(ctx)
horizon = settings.labels.horizon_days(CONVERSION.name)
print(f"{len(inputs.events):,} events, {len(inputs.entities):,} entities, as of {ctx.as_of.date()}")

# %% [markdown]
# ## Training snapshots
#
# One feature table per monthly cutoff, stacked; each row's label looks only at
# outcomes in `(cutoff, cutoff + horizon]`, each feature only at events before the
# cutoff. The last cutoff is one horizon before the run date, so every label is known.

# %%
frame = training.training_frame(ctx, inputs, CONVERSION)
print(label_definition(CONVERSION.name, horizon))
frame.groupby("as_of")["label"].agg(rows="size", conversions="sum", rate="mean")

# %% [markdown]
# ## Train
#
# Same call as the nightly `train` step: time split (train / calibration /
# validation cutoffs), leakage guard, LightGBM, calibration, and the lead rule score
# as the baseline, both as written and refitted on the training fold.

# %%
result = train_model(
    frame.drop(columns=["label"]),
    frame["label"],
    frame["as_of"],
    CONVERSION.name,
    horizon_days=horizon,
    params=settings.model.lightgbm_params,
    feature_set_version=settings.feature_spec().version,
    min_positive_labels=settings.model.min_positive_labels,
    leakage_auc_threshold=settings.model.leakage_auc_threshold,
    rule_model=RuleScore(CONVERSION.rules),
    label_definition=label_definition(CONVERSION.name, horizon),
    seed=settings.seed,
)
display(pd.DataFrame(result.split.describe()["rows"], index=["rows"]))
columns = ["n", "positives", "roc_auc", "pr_auc", "lift_top_decile", "log_loss", "brier", "ece"]
pd.DataFrame(result.metrics).T[columns].astype(float).round(4)

# %% [markdown]
# ## Model against rules on the out-of-time fold
#
# The rule scores are mapped to probabilities by a sigmoid fitted on the calibration
# fold, so all three curves are comparable. ROC shows ranking over every threshold;
# lift shows what sales feel: how much richer the first deciles are than average.

# %%
validation = result.validation
y_valid = validation["label"]
scores = {
    name.removeprefix("p_").replace("_", " "): validation[name]
    for name in validation.columns
    if name.startswith("p_")
}
roc_curve_figure(y_valid, scores, title="Conversion: ROC on the validation fold")

# %%
lift_chart_figure(y_valid, scores, title="Conversion: lift and capture on the validation fold")

# %% [markdown]
# ## Calibration
#
# A probability of 5% should convert about 5 times in 100. Bins hold equal numbers
# of leads; points on the diagonal are well calibrated.

# %%
calibration_curve_figure(y_valid, {"model": validation["p_model"]}, title="Conversion calibration")

# %% [markdown]
# ## What drives the model: SHAP beeswarm
#
# Each dot is a validation lead; its position is the feature's contribution to the
# log-odds (LightGBM's exact TreeSHAP, the numbers the reason codes are built from),
# its colour the feature's value.

# %%
explanation = shap_explanation(result.model, result.validation_features, max_rows=800, seed=seed)
import shap  # noqa: E402 - after shap_explanation, which imports it with its warnings silenced

shap.plots.beeswarm(explanation, max_display=15)

# %%
result.importance.head(15).set_index("feature")

# %% [markdown]
# ## Three leads, as sales see them
#
# Scoring goes through the nightly `score` step with this model as the conversion
# champion (customers have no churn model here, so they get the rule score). Reasons
# are in points of the 0-100 score: the base score plus every impact adds up to the
# lead's score. Sales read them on the lead board (the `reasons_text` sentences) and in
# the CRM (the short text the CRM export writes).

# %%
features = steps.build_features(settings.feature_spec(), inputs, ctx.as_of)
champions = {CONVERSION.name: result.model, CHURN.name: None}
scoring = steps.score(
    inputs,
    features,
    champions,
    None,
    ctx.as_of,
    bands=settings.bands,
    reason_refresh_tolerance=settings.output.reason_refresh_tolerance,
)
scored = scoring.frame
leads = scored[(scored["kind"] == "lead") & (scored["status"] == "scored")]
leads = leads.sort_values("score", ascending=False, ignore_index=True)
picked = leads.iloc[[0, len(leads) // 2, len(leads) - 1]]
picked[["entity_id", "score", "band", "conversion_probability", "rule_score", "rule_band"]]

# %%
for lead in picked.itertuples():
    display(
        Markdown(
            f"**{lead.entity_id}**: score **{lead.score}** ({lead.band}),"
            f" conversion probability {lead.conversion_probability:.1%},"
            f" rule score {lead.rule_score:.0f} ({lead.rule_band})\n\n"
            f"- Lead board and score table: {lead.reasons_text}\n"
            f"- CRM field: `{crm_reason_text(lead.reasons_up, lead.reasons_down)}`"
        )
    )

# %% [markdown]
# The band thresholds come from the model's validation fold (top share of leads in
# `high`), the same rule the nightly run applies:

# %%
scoring.band_rule.to_dict()
