"""Keyed-hash pseudonyms and decorrelated sample rows."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pytest

from models import privacy
from models.privacy import (
    PseudonymKeyError,
    decorrelated_rows,
    pseudonymise,
    pseudonymise_one,
    resolve_pseudonym_key,
)

KEY = b"a-long-enough-test-key-42"


def test_pseudonym_is_the_truncated_hmac_sha256_of_the_id():
    digest = hmac.new(KEY, b"L0000001", hashlib.sha256).hexdigest()
    assert pseudonymise_one("L0000001", KEY) == "p-" + digest[:16]


def test_pseudonyms_are_stable_per_key_and_differ_across_keys_and_ids():
    ids = pd.Series(["L0000001", "L0000002", None, "L0000001"], index=[5, 6, 7, 8])
    first = pseudonymise(ids, KEY)
    assert first.index.tolist() == [5, 6, 7, 8]
    assert first[5] == first[8] != first[6]
    assert pd.isna(first[7])
    other = pseudonymise(ids, b"another-long-enough-key")
    assert other[5] != first[5]
    assert "L0000001" not in "".join(first.dropna())


def test_numbers_and_their_text_get_the_same_pseudonym():
    assert pseudonymise([42], KEY)[0] == pseudonymise_one("42", KEY)


def test_key_comes_from_settings_then_environment(monkeypatch):
    monkeypatch.setenv(privacy.PSEUDONYM_KEY_ENV, "from-the-environment-123")
    assert resolve_pseudonym_key("from-the-settings-12345") == b"from-the-settings-12345"
    assert resolve_pseudonym_key(None) == b"from-the-environment-123"


def test_missing_key_is_a_sentence_unless_an_ephemeral_key_is_allowed(monkeypatch):
    monkeypatch.delenv(privacy.PSEUDONYM_KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError, match="LEADSCORE_PSEUDONYM_KEY"):
        resolve_pseudonym_key(None)
    ephemeral = resolve_pseudonym_key(None, allow_ephemeral=True)
    assert len(ephemeral) == 32
    assert resolve_pseudonym_key(None, allow_ephemeral=True) == ephemeral


def test_short_key_is_refused():
    with pytest.raises(PseudonymKeyError, match="at least 16"):
        resolve_pseudonym_key("short")
    with pytest.raises(PseudonymKeyError):
        pseudonymise_one("x", b"")


def test_decorrelated_rows_keep_columns_and_marginals_but_no_real_row():
    rng = np.random.default_rng(0)
    real = pd.DataFrame(
        {
            "visits": rng.normal(size=400),
            "minutes": rng.exponential(size=400),
            "industry": pd.Categorical(rng.choice(["a", "b", "c"], 400)),
            "downloads": np.where(rng.random(400) < 0.2, np.nan, rng.integers(0, 9, 400)),
        }
    )
    drawn = decorrelated_rows(real, 300, seed=1)
    assert list(drawn.columns) == list(real.columns)
    assert drawn.dtypes.equals(real.dtypes)
    assert list(drawn["industry"].cat.categories) == ["a", "b", "c"]
    assert set(drawn["visits"]) <= set(real["visits"])
    real_pairs = set(zip(real["visits"], real["minutes"], strict=True))
    assert sum(p in real_pairs for p in zip(drawn["visits"], drawn["minutes"], strict=True)) < 5
    assert abs(drawn["visits"].mean() - real["visits"].mean()) < 0.25
    pd.testing.assert_frame_equal(drawn, decorrelated_rows(real, 300, seed=1))


def test_decorrelated_rows_of_an_empty_frame_is_an_error():
    with pytest.raises(ValueError, match="at least one row"):
        decorrelated_rows(pd.DataFrame({"x": []}), 3)
