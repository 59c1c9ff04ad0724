"""Pseudonymisation and minimisation helpers: pure functions, no I/O.

* :func:`pseudonymise` turns ids into keyed hashes (HMAC-SHA256). Without the key
  nobody can link a pseudonym back to a person, even by hashing every candidate id,
  which a plain hash would allow. The key comes from ``LEADSCORE_PSEUDONYM_KEY``
  (``Settings.pseudonym_key``), never from a file in the repository.
* :func:`resolve_pseudonym_key` picks the key: the configured one, else (only when
  the caller allows it) a random key that lives as long as the process. Pseudonyms
  made with such a key cannot be matched across runs, which is acceptable for a
  receipt and for artifacts that must only carry *no* raw id.
* :func:`decorrelated_rows` resamples every column independently, so a plot built
  from the rows keeps each feature's distribution but no row is a real person.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable

import numpy as np
import pandas as pd
from pydantic import SecretStr

log = logging.getLogger(__name__)

PSEUDONYM_KEY_ENV = "LEADSCORE_PSEUDONYM_KEY"
#: Shortest key accepted: a short key can be brute-forced together with the ids.
MIN_KEY_LENGTH = 16
#: Hex digits kept of the HMAC; 64 bits make collisions negligible at millions of ids.
PSEUDONYM_HEX_DIGITS = 16
PSEUDONYM_PREFIX = "p-"

_process_key: dict[str, bytes] = {}


class PseudonymKeyError(ValueError):
    """No usable pseudonymisation key was configured."""


def resolve_pseudonym_key(
    configured: SecretStr | str | None = None, *, allow_ephemeral: bool = False
) -> bytes:
    """The key for :func:`pseudonymise`.

    Args:
        configured: ``Settings.pseudonym_key``; when empty, the environment variable
            ``LEADSCORE_PSEUDONYM_KEY`` is read.
        allow_ephemeral: Without a configured key, return a random key kept for the
            life of this process instead of failing (pseudonyms then differ between
            processes and cannot be linked to anything later).

    Returns:
        The key as bytes.

    Raises:
        PseudonymKeyError: The key is shorter than :data:`MIN_KEY_LENGTH`, or missing
            while ``allow_ephemeral`` is false.
    """
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    key = configured or os.environ.get(PSEUDONYM_KEY_ENV) or ""
    if key:
        if len(key) < MIN_KEY_LENGTH:
            raise PseudonymKeyError(
                f"The pseudonymisation key ({PSEUDONYM_KEY_ENV}) has {len(key)} characters; "
                f"use at least {MIN_KEY_LENGTH} random characters, e.g. the output of "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        return key.encode("utf-8")
    if not allow_ephemeral:
        raise PseudonymKeyError(
            f"No pseudonymisation key: set the environment variable {PSEUDONYM_KEY_ENV} to a "
            f"random secret of at least {MIN_KEY_LENGTH} characters (never store it in a file "
            "of the repository)."
        )
    if "key" not in _process_key:
        log.warning(
            "No %s set: pseudonyms use a random key of this process and cannot be matched "
            "across runs.", PSEUDONYM_KEY_ENV,
        )  # fmt: skip
        _process_key["key"] = secrets.token_bytes(32)
    return _process_key["key"]


def pseudonymise_one(value: object, key: bytes) -> str:
    """The keyed hash of one id, e.g. ``p-3f9a0c1e5b7d2a64``.

    Args:
        value: The id (converted to text first, so ``42`` and ``"42"`` agree).
        key: From :func:`resolve_pseudonym_key`.

    Returns:
        :data:`PSEUDONYM_PREFIX` followed by :data:`PSEUDONYM_HEX_DIGITS` hex digits.
    """
    if not key:
        raise PseudonymKeyError("pseudonymise needs a non-empty key (resolve_pseudonym_key).")
    digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_DIGITS]


def pseudonymise(values: Iterable[object] | pd.Series, key: bytes) -> pd.Series:
    """Keyed hashes of many ids; missing values stay missing.

    Args:
        values: Ids (a Series keeps its index).
        key: From :func:`resolve_pseudonym_key`.

    Returns:
        A string Series of pseudonyms, same length and order.
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype="object")
    hashed = [None if pd.isna(v) else pseudonymise_one(v, key) for v in series.to_numpy(object)]
    return pd.Series(hashed, index=series.index, dtype="string")


def decorrelated_rows(frame: pd.DataFrame, n_rows: int, seed: int = 42) -> pd.DataFrame:
    """Rows whose every column is drawn independently from ``frame``'s column.

    Each column keeps its marginal distribution (and dtype, categories included),
    but the rows are recombined at random, so no output row is an input row and
    nothing links a value to the person it came from. Used for SHAP summary plots.

    Args:
        frame: Real rows (features only, no ids).
        n_rows: Rows to draw (with replacement).
        seed: Random seed.

    Returns:
        A new frame with a fresh index.

    Raises:
        ValueError: ``frame`` is empty while rows are requested.
    """
    if n_rows > 0 and frame.empty:
        raise ValueError("decorrelated_rows needs at least one row to sample from.")
    rng = np.random.default_rng(seed)
    columns = {
        name: frame[name].iloc[rng.integers(0, len(frame), n_rows)].reset_index(drop=True)
        for name in frame.columns
    }
    return pd.DataFrame(columns, columns=frame.columns)
