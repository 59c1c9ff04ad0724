"""Undeclared event types carry their values and items (issue 15 item 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.reference import build_features_pandas
from features.spec import FeatureSpec, feature_catalog
from tests.conftest import AS_OF, make_event_history

DAY = pd.Timedelta(days=1)


def with_payload(seed: int = 3, **history: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random history whose undeclared ``chat message`` events carry values and items.

    ``history`` overrides :func:`make_event_history`'s arguments (30 entities, 2,000
    events over 100 days here).
    """
    size = {"n_entities": 30, "n_events": 2000, "history_days": 100} | history
    events, entities = make_event_history(seed, **size)
    rng = np.random.default_rng(seed)
    chat = (events["event_type"] == "chat message").to_numpy()
    n = int(chat.sum())
    value = events["value"].to_numpy(copy=True)
    value[chat] = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(0, 10, n))
    item = events["item"].astype(object).to_numpy(copy=True)
    item[chat] = np.where(rng.random(n) < 0.2, None, rng.choice(["x", "y", "z", "w"], n))
    return events.assign(value=value, item=pd.array(item, dtype="str")), entities


def test_the_engine_equals_the_reference_on_values_and_items():
    events, entities = with_payload()
    built = build_features(events, entities, AS_OF)
    pd.testing.assert_frame_equal(
        built, build_features_pandas(events, entities, AS_OF), check_exact=False, rtol=1e-9
    )
    assert (built["chat_message_value_sum_30d"] > 0).any()
    assert (built["chat_message_distinct_items_90d"] > 1).any()
    assert built["chat_message_value_mean_7d"].notna().any()
    # A type without values or items keeps its columns: 0, empty, 0.
    assert (built["api_call_value_sum_30d"] == 0).all()
    assert built["api_call_value_mean_30d"].isna().all()
    assert (built["api_call_distinct_items_30d"] == 0).all()


def test_an_undeclared_types_values_change_the_features():
    entities = pd.DataFrame({"entity_id": ["a"], "created_at": [AS_OF - 100 * DAY]})
    times = pd.to_datetime([AS_OF - 2 * DAY, AS_OF - 5 * DAY, AS_OF - 20 * DAY, AS_OF - 60 * DAY])
    events = pd.DataFrame(
        {
            "entity_id": "a",
            "event_time": times,
            "event_type": "video_watch",
            "value": [10.0, np.nan, 30.0, 100.0],
            "item": pd.array(["v1", "v2", "v1", "v3"], dtype="str"),
        }
    )
    row = build_features(events, entities, AS_OF).iloc[0]
    assert row["video_watch_value_sum_7d"] == 10.0
    assert row["video_watch_value_mean_7d"] == 10.0  # the missing value is not a 0
    assert row["video_watch_value_sum_30d"] == 40.0
    assert row["video_watch_value_mean_30d"] == 20.0
    assert row["video_watch_value_sum_90d"] == 140.0
    assert row["video_watch_distinct_items_7d"] == 2
    assert row["video_watch_distinct_items_30d"] == 2
    assert row["video_watch_distinct_items_90d"] == 3
    doubled = build_features(events.assign(value=events["value"] * 2), entities, AS_OF)
    assert doubled.iloc[0]["video_watch_value_sum_30d"] == 80.0
    assert doubled.iloc[0]["video_watch_count_30d"] == row["video_watch_count_30d"]


@pytest.mark.parametrize(
    "name, value, text",
    [
        (
            "video_watch_value_sum_30d",
            12.5,
            "video watch events in the last 30 days add up to 12.5",
        ),
        ("video_watch_value_mean_30d", 4, "Average value per video watch event in the last 30"),
        ("video_watch_distinct_items_30d", 1, "1 item in the video watch events"),
        ("video_watch_distinct_items_30d", 3, "3 different items in the video watch events"),
    ],
)
def test_payload_features_are_described_in_words(name, value, text):
    catalog = {d.name: d for d in feature_catalog(FeatureSpec(), ["video_watch"])}
    assert text in catalog[name].describe(value)
    # Declared types carry no payload columns.
    assert "login_value_sum_30d" not in catalog
