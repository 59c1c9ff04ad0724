"""Evaluation schemes: a time split with gaps, a rolling origin, or a stated stratified split."""

import numpy as np
import pandas as pd
import pytest

from models.splits import (
    choose_split,
    cutoffs_needed,
    out_of_time_split,
    rolling_origin_split,
    stratified_split,
)


def stacked(cutoffs: int, step_days: int = 30, entities: int = 200, seed: int = 0):
    """``entities`` rows per cutoff: as_of, entity ids and labels (about 20% positive)."""
    days = pd.date_range("2025-01-01", periods=cutoffs, freq=f"{step_days}D", tz="UTC")
    as_of = pd.Series(np.repeat(days, entities))
    ids = np.tile([f"e{i}" for i in range(entities)], cutoffs)
    y = (np.random.default_rng(seed).random(len(as_of)) < 0.2).astype(int)
    return as_of, ids, y


def test_out_of_time_split_keeps_a_horizon_between_folds():
    cutoffs = pd.date_range("2025-01-01", periods=10, freq="30D", tz="UTC")
    as_of = pd.Series(np.repeat(cutoffs, 5))
    split = out_of_time_split(as_of, horizon_days=60)
    gap = pd.Timedelta(days=60)
    assert max(split.train_cutoffs) + gap <= min(split.calibration_cutoffs)
    assert max(split.calibration_cutoffs) + gap <= min(split.validation_cutoffs)
    assert split.validation_cutoffs == (cutoffs[-1],)
    folds = [set(split.train), set(split.calibration), set(split.validation)]
    assert all(not (a & b) for i, a in enumerate(folds) for b in folds[i + 1 :])
    assert as_of.iloc[split.validation].min() > as_of.iloc[split.train].max()
    assert split.describe()["out_of_time"] is True


def test_out_of_time_split_with_too_few_cutoffs_says_why():
    as_of = pd.Series(pd.date_range("2025-01-01", periods=3, freq="30D", tz="UTC"))
    with pytest.raises(ValueError, match="60-day horizon"):
        out_of_time_split(as_of, horizon_days=60)


def test_stratified_split_is_flagged_and_keeps_class_shares():
    y = (np.random.default_rng(3).random(5000) < 0.2).astype(int)
    split = stratified_split(y, seed=1)
    assert not split.out_of_time and split.scheme == "stratified"
    assert sorted(np.r_[split.train, split.calibration, split.validation]) == list(range(5000))
    for fold in (split.train, split.calibration, split.validation):
        assert abs(y[fold].mean() - y.mean()) < 0.01


def test_enough_cutoffs_keep_the_time_split_and_say_so():
    as_of, ids, y = stacked(6)
    split = choose_split(as_of, y, 60, groups=ids)
    assert split.scheme == "out_of_time" and split.out_of_time
    assert split.reason.startswith("out-of-time split: 6 cutoffs")
    assert split.fold_splits() == (split,)


def test_few_cutoffs_give_a_rolling_origin_whose_folds_are_a_horizon_apart():
    as_of, ids, y = stacked(4)  # 4 cutoffs 30 days apart; a 60-day time split needs 5
    assert cutoffs_needed(30, 60) == 5
    split = choose_split(as_of, y, 60, groups=ids, seed=3)
    assert split.scheme == "rolling_origin" and split.out_of_time
    assert "rolling origin: 4 cutoffs 30 days apart" in split.reason
    assert "which needs 5" in split.reason and "2 folds" in split.reason
    gap = pd.Timedelta(days=60)
    for fold in split.fold_splits():
        (valid_cutoff,) = fold.validation_cutoffs
        assert as_of.iloc[fold.validation].eq(valid_cutoff).all()
        trained = np.r_[fold.train, fold.calibration]
        assert (as_of.iloc[trained] + gap <= valid_cutoff).all()
        # Calibration rows are entities the fold's model did not train on.
        assert not set(ids[fold.train]) & set(ids[fold.calibration])
    pooled = np.concatenate([f.validation for f in split.fold_splits()])
    assert np.array_equal(split.validation, pooled)
    # The scoring model is refit on every row, its calibration entities held out.
    assert sorted(np.r_[split.train, split.calibration]) == list(range(len(y)))
    assert not set(ids[split.train]) & set(ids[split.calibration])
    assert split.describe()["folds"] == 2


def test_one_cutoff_gives_a_stated_stratified_split():
    as_of, ids, y = stacked(1, entities=1000)
    split = choose_split(as_of, y, 90, groups=ids, seed=5)
    assert split.scheme == "stratified" and not split.out_of_time
    assert split.reason.startswith("stratified random split: one usable cutoff (2025-01-01)")
    assert "seed 5" in split.reason and "not out-of-time" in split.reason
    assert split.describe()["scheme_name"] == "stratified random split (not out-of-time)"
    assert choose_split(as_of, y, 90, groups=ids, seed=5).validation.tolist() == (
        split.validation.tolist()
    )


def test_cutoffs_closer_than_a_horizon_are_split_by_entity_not_by_row():
    as_of, ids, y = stacked(2)  # 30 days apart, horizon 90: nothing to validate later on
    split = choose_split(as_of, y, 90, groups=ids)
    assert split.scheme == "stratified"
    assert "none is 90 days after another" in split.reason
    folds = [set(ids[f]) for f in (split.train, split.calibration, split.validation)]
    assert all(not (a & b) for i, a in enumerate(folds) for b in folds[i + 1 :])


def test_rolling_origin_is_none_without_a_cutoff_a_horizon_after_another():
    as_of, ids, y = stacked(3)
    assert rolling_origin_split(as_of, y, 90, groups=ids) is None


def test_a_snapshot_without_time_is_stratified_and_says_why():
    y = (np.random.default_rng(1).random(500) < 0.3).astype(int)
    split = choose_split(None, y, 30)
    assert split.scheme == "stratified"
    assert "one snapshot without dates" in split.reason


@pytest.mark.parametrize("cutoffs", [5, 7])
def test_the_time_split_needs_what_cutoffs_needed_says(cutoffs):
    as_of, _, y = stacked(cutoffs)
    assert choose_split(as_of, y, 60).scheme == "out_of_time"
    as_of, _, y = stacked(cutoffs - 1)
    assert choose_split(as_of, y, 60 if cutoffs == 5 else 90).scheme == "rolling_origin"


def test_rows_in_time_order_validate_each_block_on_models_of_earlier_rows():
    y = np.tile([0, 0, 0, 1], 250)
    order = np.arange(1000)[::-1]  # the last row of the frame is the oldest
    split = choose_split(None, y, 1, row_order=order)
    assert split.scheme == "rolling_origin" and split.out_of_time
    assert "row order" in split.reason and len(split.folds) == 4
    for fold in split.folds:
        seen = np.concatenate([fold.train, fold.calibration])
        # Every training row comes before (is older than) every validation row.
        assert order[seen].max() < order[fold.validation].min()
        assert len(fold.validation) == 200
    assert sorted(np.concatenate([split.train, split.calibration])) == list(range(1000))
