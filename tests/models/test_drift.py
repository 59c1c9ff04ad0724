import numpy as np
import pandas as pd
import pytest

from models.drift import psi, psi_table


def test_identical_distributions_have_zero_psi():
    values = np.random.default_rng(0).normal(size=5000)
    assert psi(values, values) == pytest.approx(0.0, abs=1e-12)


def test_psi_grows_with_the_shift():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=20_000)
    small = psi(ref, rng.normal(0.1, 1, 20_000))
    large = psi(ref, rng.normal(1.0, 1, 20_000))
    assert small < 0.1 < 0.25 < large


def test_categorical_and_missing_values_count_as_levels():
    ref = pd.Series(["a"] * 50 + ["b"] * 50)
    cur = pd.Series(["a"] * 50 + [None] * 50)
    assert psi(ref, cur) > 0.25


def test_feature_going_missing_shows_as_drift():
    ref = pd.Series(np.arange(1000, dtype=float))
    cur = pd.Series([np.nan] * 1000)
    assert psi(ref, cur) > 0.25


def test_psi_table_sorted_and_skips_absent_columns():
    rng = np.random.default_rng(2)
    ref = pd.DataFrame({"stable": rng.normal(size=3000), "moved": rng.normal(size=3000)})
    cur = pd.DataFrame({"stable": rng.normal(size=3000), "moved": rng.normal(2, 1, 3000)})
    table = psi_table(ref, cur, ["stable", "moved", "absent"])
    assert list(table["column"]) == ["moved", "stable"]


def test_psi_status_thresholds():
    from models.drift import psi_status

    assert psi_status({"score": 0.05}, 0.1, 0.25) == ("ok", [])
    status, messages = psi_status({"score": 0.05, "login_count_30d": 0.2}, 0.1, 0.25)
    assert status == "warning" and "login_count_30d" in messages[0]
    status, _ = psi_status({"score": 0.3, "x": 0.2}, 0.1, 0.25)
    assert status == "failed"
