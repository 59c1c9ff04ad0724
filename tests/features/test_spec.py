"""Feature descriptions read as sentences with the entity's own value."""

import pytest

from features.spec import FeatureSpec, per_type_features, special_features
from features.wording import singular_noun


@pytest.mark.parametrize(
    ("plural", "singular"),
    [
        ("pricing page visits", "pricing page visit"),
        ("webinars attended", "webinar attended"),
        ("email bounces", "email bounce"),
        ("unsubscribes", "unsubscribe"),
        ("business", "business"),
        ("sales call events", "sales call event"),
    ],
)
def test_singular_noun_drops_the_s_of_the_first_plural_word(plural, singular):
    assert singular_noun(plural) == singular


def test_a_count_of_one_reads_in_the_singular_and_other_counts_in_the_plural():
    count = per_type_features(FeatureSpec(), "demo_request")[0]
    assert count.describe(1) == "1 demo request in the last 7 days"
    assert count.describe(0) == "0 demo requests in the last 7 days"
    assert count.describe(3) == "3 demo requests in the last 7 days"


def test_one_day_ago_and_other_singulars_of_the_special_features():
    spec = FeatureSpec()
    recency = next(d for d in per_type_features(spec, "login") if d.name.endswith("since_last"))
    assert recency.describe(1.2) == "Last of the logins 1 day ago (empty: never)"
    assert recency.describe(11) == "Last of the logins 11 days ago (empty: never)"
    by_name = {d.name: d for d in special_features(spec)}
    assert by_name["open_tickets"].describe(1) == "1 support ticket still open"
    assert by_name["open_tickets"].describe(2) == "2 support tickets still open"
    assert by_name["tenure_days"].describe(1).endswith("1 day")
