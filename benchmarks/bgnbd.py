"""BG/NBD (Fader, Hardie & Lee 2005): summary statistics, maximum-likelihood fit, predictions.

Fitted with scipy (``lifetimes`` is not a dependency); the CDNOW benchmark uses it as
the published churn baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1

#: Published BG/NBD estimates on the CDNOW 1/10 sample, 39-week calibration (FHL 2005).
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}


def rfm_summary(purchases: pd.DataFrame, cutoff: pd.Timestamp) -> pd.DataFrame:
    """BG/NBD inputs per customer from purchases strictly before ``cutoff``, in weeks.

    ``x`` = repeat purchase days (distinct days - 1), ``t_x`` = weeks from the first to
    the last purchase day, ``T`` = weeks from the first purchase day to the cutoff.
    """
    days = purchases.loc[purchases["event_time"] < cutoff, ["entity_id", "event_time"]]
    days = days.assign(day=days["event_time"].dt.floor("D")).drop_duplicates(["entity_id", "day"])
    grouped = days.groupby("entity_id")["day"].agg(["min", "max", "count"])
    week = pd.Timedelta(days=7)
    return pd.DataFrame(
        {
            "x": (grouped["count"] - 1).astype("float64"),
            "t_x": (grouped["max"] - grouped["min"]) / week,
            "T": (cutoff - grouped["min"]) / week,
        }
    )


def bgnbd_fit(summary: pd.DataFrame) -> dict[str, float]:
    """Maximum-likelihood BG/NBD parameters ``r, alpha, a, b`` (FHL 2005, equation 6)."""
    x, t_x, big_t = (summary[c].to_numpy("float64") for c in ("x", "t_x", "T"))

    def negative_ll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = betaln(a, b + x) - betaln(a, b)
        a3 = -(r + x) * np.log(alpha + big_t)
        a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12))
                      - (r + x) * np.log(alpha + t_x), -np.inf)  # fmt: skip
        return -float(np.sum(a1 + a2 + np.logaddexp(a3, a4)))

    fit = minimize(negative_ll, np.zeros(4), method="L-BFGS-B", bounds=[(-8, 8)] * 4)
    if not fit.success:
        raise RuntimeError(f"BG/NBD fit did not converge: {fit.message}")
    return dict(zip(("r", "alpha", "a", "b"), np.exp(fit.x).tolist(), strict=True))


def _alive_odds_term(p: dict[str, float], summary: pd.DataFrame) -> np.ndarray:
    x, t_x, big_t = (summary[c].to_numpy("float64") for c in ("x", "t_x", "T"))
    ratio = np.exp((p["r"] + x) * (np.log(p["alpha"] + big_t) - np.log(p["alpha"] + t_x)))
    return np.where(x > 0, p["a"] / np.maximum(p["b"] + x - 1, 1e-12) * ratio, 0.0)


def bgnbd_p_alive(p: dict[str, float], summary: pd.DataFrame) -> np.ndarray:
    """P(still alive at T | x, t_x, T)."""
    return 1.0 / (1.0 + _alive_odds_term(p, summary))


def bgnbd_p_no_purchase(p: dict[str, float], summary: pd.DataFrame, weeks: float) -> np.ndarray:
    """P(no purchase in (T, T + weeks]): dead, or alive with no purchase in the window.

    Given alive, the purchase rate is Gamma(r + x, alpha + T) and a BG/NBD customer can
    only drop out right after a purchase, so the zero-purchase chance is
    ``((alpha + T) / (alpha + T + weeks)) ** (r + x)``.
    """
    alive = bgnbd_p_alive(p, summary)
    x, big_t = summary["x"].to_numpy("float64"), summary["T"].to_numpy("float64")
    quiet = ((p["alpha"] + big_t) / (p["alpha"] + big_t + weeks)) ** (p["r"] + x)
    return 1.0 - alive + alive * quiet


def bgnbd_expected_purchases(
    p: dict[str, float], summary: pd.DataFrame, weeks: float
) -> np.ndarray:
    """E[repeat purchases in (T, T + weeks] | x, t_x, T] (FHL 2005, equation 10)."""
    r, alpha, a, b = p["r"], p["alpha"], p["a"], p["b"]
    x, big_t = summary["x"].to_numpy("float64"), summary["T"].to_numpy("float64")
    z = weeks / (alpha + big_t + weeks)
    hyper = hyp2f1(r + x, b + x, a + b + x - 1, z)
    head = (a + b + x - 1) / (a - 1)
    body = 1 - ((alpha + big_t) / (alpha + big_t + weeks)) ** (r + x) * hyper
    return head * body / (1.0 + _alive_odds_term(p, summary))
