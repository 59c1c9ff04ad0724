"""Each feature's value follows its definition: defaults, generic types, cutoffs, windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.backend import event_types_seen
from features.build import build_features
from features.spec import FeatureSpec, feature_catalog
from tests.features.test_build import CUSTOM_SPEC, DAY, events_of, one_entity
from tests.features.test_build import duckdb_con as duckdb_con  # a fixture, shared

US = pd.Timedelta(microseconds=1)


def the_row(events, as_of, spec=None, **kwargs):
    spec = spec or FeatureSpec()
    table = build_features(events, one_entity(as_of), as_of, spec, **kwargs)
    assert len(table) == 1
    return table.iloc[0]


# --- (c)-(f) defined values, generic types, exact cutoffs, window edges ------------------


def test_entities_without_events_get_zero_counts_and_no_recency(as_of, duckdb_con):
    entities = pd.DataFrame(
        {"entity_id": ["quiet", "busy"], "created_at": [as_of - 10 * DAY, as_of - 10 * DAY]}
    )
    events = events_of(("login", as_of - DAY)).assign(entity_id="busy")
    table = build_features(events, entities, as_of, con=duckdb_con).set_index("entity_id")
    quiet = table.loc["quiet"]
    catalog = {d.name: d for d in feature_catalog(FeatureSpec())}
    for name, feature in catalog.items():
        if feature.dtype == "int64":
            assert quiet[name] == 0, name
    assert np.isnan(quiet["login_days_since_last"]) and np.isnan(quiet["days_since_last_event"])
    assert quiet["login_decayed"] == 0.0 and quiet["login_trend"] == 0.0
    assert quiet["nps_class"] == "none" and np.isnan(quiet["nps_latest"])
    assert np.isnan(quiet["email_open_rate_90d"]) and np.isnan(quiet["avg_session_minutes_30d"])
    assert quiet["session_minutes_30d"] == 0.0 and quiet["purchase_amount_90d"] == 0.0
    assert table.loc["busy", "login_count_7d"] == 1


def test_undeclared_event_types_get_generic_columns(as_of, duckdb_con):
    events = events_of(
        ("Chat Message!", as_of - DAY),
        ("Chat Message!", as_of - 40 * DAY),
        ("seen_later", as_of + DAY),
    )
    row = the_row(events, as_of, con=duckdb_con)
    assert row["chat_message_count_7d"] == 1 and row["chat_message_count_90d"] == 2
    assert row["chat_message_days_since_last"] == pytest.approx(1.0)
    assert row["chat_message_trend"] == 0.0  # one in the last 30 days, one in the 30 before
    assert row["chat_message_decayed"] == pytest.approx(0.5 ** (1 / 14) + 0.5 ** (40 / 14))
    assert not any(c.startswith("seen_later") for c in row.index)
    assert row["days_since_last_event"] == pytest.approx(1.0)
    assert event_types_seen(events, as_of) == ["Chat Message!"]
    assert event_types_seen(events) == ["Chat Message!", "seen_later"]


def test_event_types_whose_columns_would_collide_are_refused(as_of):
    events = events_of(("page view", as_of - DAY), ("Page-View", as_of - DAY))
    with pytest.raises(ValueError, match="page_view"):
        build_features(events, one_entity(as_of), as_of)


def test_an_event_at_the_cutoff_is_excluded_one_microsecond_before_is_included(as_of):
    at_cutoff = the_row(events_of(("login", as_of)), as_of)
    assert at_cutoff["login_count_7d"] == 0 and np.isnan(at_cutoff["login_days_since_last"])
    just_before = the_row(events_of(("login", as_of - US)), as_of)
    assert just_before["login_count_7d"] == 1
    assert just_before["login_days_since_last"] == pytest.approx(1e-6 / 86_400, rel=1e-6)
    assert just_before["login_decayed"] == pytest.approx(1.0)


def test_window_edges_follow_the_point_in_time_rule(duckdb_con):
    as_of = pd.Timestamp("2025-03-15 09:30", tz="UTC")
    row = the_row(
        events_of(
            ("page_view", as_of - 7 * DAY),  # first instant of the 7-day window
            ("page_view", as_of - 7 * DAY - US),  # just outside it
            ("page_view", as_of - 30 * DAY),  # last 30 days: trend "recent" span
            ("page_view", as_of - 60 * DAY),  # the 30 days before
            ("page_view", as_of - 60 * DAY - US),  # outside both trend spans
        ),
        as_of,
        con=duckdb_con,
    )
    assert row["page_view_count_7d"] == 1
    assert row["page_view_count_30d"] == 3
    assert row["page_view_count_90d"] == 5
    assert row["page_view_trend"] == 3 - 1


def test_login_weeks_and_days_use_utc_days_and_seven_day_spans(duckdb_con):
    as_of = pd.Timestamp("2025-03-15 09:30", tz="UTC")
    row = the_row(
        events_of(
            ("login", as_of - 7 * DAY),  # week 1 (its first instant), on Mar 8
            ("login", as_of - 7 * DAY - US),  # week 2, also on Mar 8
            ("login", as_of - 21 * DAY - US),  # week 4, Feb 22
            ("login", as_of - 28 * DAY - US),  # outside the 28 days (Feb 15), inside 30
            ("login", pd.Timestamp("2025-03-15 00:00", tz="UTC")),  # the cutoff's UTC day
            ("login", pd.Timestamp("2025-03-14 23:59:59.999999", tz="UTC")),  # the day before
        ),
        as_of,
        con=duckdb_con,
    )
    assert row["login_active_weeks_4w"] == 3
    assert row["login_active_days_28d"] == 4  # Mar 15, Mar 14, Mar 8, Feb 22
    assert row["active_days_30d"] == 5  # ... and Feb 15


def test_a_login_on_the_28th_day_counts_only_within_28_times_24_hours(duckdb_con):
    # At 09:30, the 28th UTC day back (Feb 15) is partly inside the 28 days.
    as_of = pd.Timestamp("2025-03-15 09:30", tz="UTC")
    inside = the_row(events_of(("login", as_of - 28 * DAY)), as_of, con=duckdb_con)
    outside = the_row(events_of(("login", as_of - 28 * DAY - US)), as_of, con=duckdb_con)
    both = the_row(
        events_of(("login", as_of - 28 * DAY), ("login", as_of - 28 * DAY - US)),
        as_of,
        con=duckdb_con,
    )
    assert inside["login_active_days_28d"] == 1 and inside["login_active_weeks_4w"] == 1
    assert outside["login_active_days_28d"] == 0 and outside["login_active_weeks_4w"] == 0
    assert both["login_active_days_28d"] == 1 and both["active_days_30d"] == 1
    for row in (inside, outside, both):
        assert row["active_days_30d"] == 1


def test_special_features_follow_their_definitions(duckdb_con):
    as_of = pd.Timestamp("2025-03-15", tz="UTC")
    row = the_row(
        events_of(
            ("nps_answer", as_of - 20 * DAY, 3.0),
            ("nps_answer", as_of - 2 * DAY, 7.0),
            ("nps_answer", as_of - 2 * DAY, 9.0),  # same instant: the highest score
            ("nps_answer", as_of - DAY, None),  # no score: not an answer
            ("session", as_of - DAY, 30.0),
            ("session", as_of - 2 * DAY, 10.0),
            ("session", as_of - 31 * DAY, 99.0),
            ("feature_use", as_of - DAY, None, "f1"),
            ("feature_use", as_of - 3 * DAY, None, "f1"),
            ("feature_use", as_of - 4 * DAY, None, "f2"),
            ("feature_use", as_of - 40 * DAY, None, "f3"),
            ("ticket_opened", as_of - 200 * DAY),
            ("ticket_opened", as_of - 5 * DAY),
            ("ticket_resolved", as_of - 100 * DAY),
            ("ticket_resolved", as_of - 99 * DAY),
            ("ticket_resolved", as_of - 98 * DAY),
            ("purchase", as_of - 10 * DAY, 120.5),
            ("purchase", as_of - 91 * DAY, 1000.0),
            ("email_delivered", as_of - 3 * DAY),
            ("email_delivered", as_of - 4 * DAY),
            ("email_bounced", as_of - 4 * DAY),
            ("email_opened", as_of - 2 * DAY),
        ),
        as_of,
        con=duckdb_con,
    )
    assert row["nps_latest"] == 9.0 and row["nps_class"] == "promoter"
    assert row["session_minutes_30d"] == 40.0 and row["avg_session_minutes_30d"] == 20.0
    assert row["key_features_used_30d"] == 2
    assert row["open_tickets"] == 0  # 2 opened, 3 resolved: never negative
    assert row["purchase_amount_90d"] == 120.5
    assert row["purchases_total"] == 2 and row["days_since_first_purchase"] == 91.0
    assert row["email_delivery_rate_90d"] == pytest.approx(2 / 3)
    assert row["email_open_rate_90d"] == 0.5 and row["email_click_rate_90d"] == 0.0
    assert row["email_click_to_open_rate_90d"] == 0.0
    assert row["tenure_days"] == 100.0
    keyed = the_row(events_of(("feature_use", as_of - DAY, None, "f3")), as_of, CUSTOM_SPEC)
    assert keyed["key_features_used_30d"] == 0  # f3 is not a key feature of CUSTOM_SPEC
    assert keyed["purchases_total"] == 0 and np.isnan(keyed["days_since_first_purchase"])


def test_key_features_count_uses_from_exactly_thirty_days_before_the_cutoff(as_of, duckdb_con):
    # Read by its own filtered scan (the window's start as a time): the edges hold.
    row = the_row(
        events_of(
            ("feature_use", as_of - 30 * DAY, None, "f1"),  # on the window's first instant
            ("feature_use", as_of - 30 * DAY - US, None, "f2"),  # a microsecond before it
            ("feature_use", as_of - US, None, "f3"),
            ("feature_use", as_of, None, "f4"),  # at the cutoff: after it
            ("nps_answer", as_of - 400 * DAY, 3.0),  # an old answer still counts
        ),
        as_of,
        con=duckdb_con,
    )
    assert row["key_features_used_30d"] == 2
    assert row["nps_latest"] == 3.0 and row["nps_class"] == "detractor"
