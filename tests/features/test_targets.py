"""One definition per target: names, kinds, rule files and signs agree everywhere."""

from __future__ import annotations

import pytest

from features.targets import CHURN, CONVERSION, TARGET_NAMES, TARGETS, target, target_for_kind


def test_each_target_is_found_by_name_and_by_the_kind_it_scores():
    assert TARGET_NAMES == ("conversion", "churn")
    for each in TARGETS:
        assert target(each.name) is each
        assert target_for_kind(each.kind) is each
    assert (CONVERSION.rules, CHURN.rules) == ("lead", "engagement")
    # Engagement goes with conversion and against churn.
    assert (CONVERSION.rule_sign, CHURN.rule_sign) == (1.0, -1.0)


def test_an_unknown_target_or_kind_is_a_sentence_naming_the_valid_ones():
    with pytest.raises(ValueError, match="use conversion or churn"):
        target("upsell")
    with pytest.raises(ValueError, match="kinds are lead or customer"):
        target_for_kind("partner")
