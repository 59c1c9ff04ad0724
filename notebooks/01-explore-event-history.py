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
# # 01 · Explore the event history
#
# Start here to learn what the pipeline sees. This notebook
#
# 1. loads events, entities and outcomes **through the data contract** (the same
#    reader and validation the nightly run uses, with its input report);
# 2. shows the **event mix over time**;
# 3. builds the **engagement features for one cutoff** (the nightly feature table);
# 4. looks at the **email KPIs** (delivery, open, click, click-to-open, unsubscribe);
# 5. shows **how the cutoff date changes what a feature can see**: only events strictly
#    before the cutoff count, which is what keeps training free of leakage.
#
# By default it runs on generated data (`features.synthetic.generate`); point
# `data_dir` at a folder with `events/`, `entities.parquet` and `outcomes.parquet` to
# explore your own.

# %% tags=["parameters"]
data_dir = None  # a folder written by features.synthetic.generate; None generates one
work_dir = None  # where outputs go; None: a new temporary folder
n_leads = 3_000
n_customers = 2_000
months = 12
seed = 3
as_of = "2025-12-01"  # the cutoff of the feature table

# %%
# %matplotlib inline
import logging
import tempfile
from pathlib import Path

import pandas as pd
from IPython.display import display

from features.build import build_snapshots
from features.synthetic import generate, source_paths
from models.plots import event_mix_table, stacked_area_figure
from pipelines import steps
from pipelines.context import RunContext, parse_as_of
from pipelines.settings import load_settings

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

work = Path(work_dir or tempfile.mkdtemp(prefix="leadscore-01-"))
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
spec = settings.feature_spec()

# %% [markdown]
# ## Load through the data contract
#
# `load_inputs` maps column names, validates types (naive times are UTC, ids never
# null, entity ids unique) and reports what it read and what it set aside. A broken
# input stops here with a sentence naming the file, the column and sample rows.
# The run keeps the events in the engine (DuckDB) and only asks it for counts; a
# notebook on a sample this size can fetch them as a pandas frame to explore.

# %%
inputs = steps.load_inputs(ctx)
events, entities, outcomes = inputs.events.to_pandas(), inputs.entities, inputs.outcomes
pd.Series(inputs.report.to_dict(), name="input report").to_frame()

# %%
display(events.dtypes.rename("dtype").to_frame())
events.head()

# %%
entities.groupby("kind", observed=True).agg(
    entities=("entity_id", "size"),
    consent=("consent", "mean"),
    first_created=("created_at", "min"),
)

# %%
outcomes.groupby([pd.Grouper(key="occurred_at", freq="MS"), "outcome"]).size().unstack()

# %% [markdown]
# ## Event mix over time
#
# Events per month by type (the ten most frequent apart, the rest as `other`). Email
# deliveries and product usage dominate the volume; the rarer, stronger signals
# (demo requests, pricing page visits) are what the models lean on.

# %%
mix = event_mix_table(events, freq="MS", top=10)
stacked_area_figure(mix, title="Events per month by type", ylabel="events per month")

# %%
kind_of = entities.set_index("entity_id")["kind"]
share = pd.crosstab(events["event_type"], events["entity_id"].map(kind_of), normalize="columns")
share.sort_values("lead", ascending=False).style.format("{:.1%}")

# %% [markdown]
# ## Engagement features for one cutoff
#
# The nightly feature table: one row per entity existing before the cutoff, per event
# type counts over 7/30/90 days, recency, decayed counts and trend, then activity,
# session, NPS, ticket, purchase and email KPI features, then the entities' fit
# attributes. The columns and their meaning come from `features/spec.py`.

# %%
features = steps.build_features(spec, inputs, ctx.as_of).frame
kind = features["entity_id"].map(kind_of).rename("kind")
print(f"{len(features):,} rows x {features.shape[1]:,} columns as of {ctx.as_of.date()}")
activity = [
    "days_since_last_event",
    "active_days_30d",
    "login_active_days_28d",
    "session_minutes_30d",
    "key_features_used_30d",
    "pricing_page_view_count_30d",
    "demo_request_count_90d",
    "open_tickets",
]
features.groupby(kind)[activity].median().transpose()

# %%
grid = features.hist(column=activity, bins=30, figsize=(12, 7), layout=(2, 4))
# %% [markdown]
# ## Email KPIs
#
# Per entity over the last 90 days before the cutoff: delivered / (delivered +
# bounced), opened / delivered, clicked / delivered, clicked / opened and unsubscribed
# / delivered (missing when the denominator is 0). Opens are noisy (privacy proxies
# pre-open mail), so clicks are the better signal.

# %%
kpis = [c for c in features.columns if c.startswith("email_") and c.endswith("_rate_90d")]
features.groupby(kind)[kpis].agg(["median", "mean"]).T.style.format("{:.1%}")

# %%
box = (
    features[kpis]
    .rename(columns=lambda c: c.removeprefix("email_").removesuffix("_rate_90d"))
    .plot.box(figsize=(9, 4), title="Email KPIs per entity, last 90 days")
)
# %%
counts = features[[f"email_{t}_count_90d" for t in ("delivered", "opened", "clicked")]].sum()
pd.Series(
    {
        "open rate (all email)": counts.iloc[1] / counts.iloc[0],
        "click rate (all email)": counts.iloc[2] / counts.iloc[0],
        "click-to-open (all email)": counts.iloc[2] / counts.iloc[1],
    },
    name="pooled over everyone",
).map("{:.1%}".format).to_frame()

# %% [markdown]
# ## What a cutoff can see
#
# Features as of cutoff `c` use only events with `event_time < c`; labels use outcomes
# in `(c, c + horizon]`. Below, one lead's pricing page visits and the features built
# from them at weekly cutoffs: each cutoff only counts what happened before it, and the
# decayed count fades between visits.

# %%
pricing = events[events["event_type"] == "pricing_page_view"]
recent = pricing[pricing["event_time"] >= ctx.as_of - pd.Timedelta(days=60)]
lead_visits = recent.loc[recent["entity_id"].map(kind_of).eq("lead"), "entity_id"]
lead_id = lead_visits.value_counts().index[0]  # the lead with most recent visits
lead_events = events[events["entity_id"] == lead_id]
lead_row = entities[entities["entity_id"] == lead_id]
cutoffs = pd.date_range(end=ctx.as_of, periods=9, freq="7D")
lead_features = build_snapshots(lead_events, lead_row, cutoffs, spec)
columns = [
    "pricing_page_view_count_7d",
    "pricing_page_view_count_30d",
    "pricing_page_view_days_since_last",
    "pricing_page_view_decayed",
]
print(f"Lead {lead_id}: {len(lead_events):,} events")
lead_features.set_index("as_of")[columns].round(2)

# %%
is_visit = (lead_events["event_type"] == "pricing_page_view") & (
    lead_events["event_time"] < ctx.as_of
)
visits = lead_events.loc[is_visit, "event_time"]
axes = lead_features.set_index("as_of")[columns[:2] + columns[3:]].plot(
    marker="o", figsize=(10, 4), x_compat=True, title=f"{lead_id}: features at weekly cutoffs"
)
axes.vlines(visits[visits >= cutoffs[0] - pd.Timedelta(days=30)], 0, 1, color="grey", label="visit")
legend = axes.legend(fontsize="small")

# %% [markdown]
# The rule is strict: a cutoff placed exactly on a visit does not see it; one
# microsecond later it does.

# %%
last_visit = visits.max()
edge = build_snapshots(
    lead_events, lead_row, [last_visit, last_visit + pd.Timedelta(microseconds=1)], spec
)
edge.set_index("as_of")[columns[:2]]
