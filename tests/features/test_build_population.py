"""Snapshots built only for a population (a target's labelled rows) equal the full table's rows."""

from __future__ import annotations

import ibis
import numpy as np
import pandas as pd
import pytest

from features.build import build_snapshots
from features.spec import FeatureSpec
from tests.features.test_build import CUSTOM_SPEC, CUTOFFS, history_with_items


@pytest.fixture(scope="module")
def duckdb_con():
    return ibis.duckdb.connect()


@pytest.mark.parametrize("spec", [FeatureSpec(), CUSTOM_SPEC], ids=["default", "custom"])
def test_a_population_gives_exactly_its_rows_of_the_full_snapshots(spec, duckdb_con):
    events, entities = history_with_items(4)
    full = build_snapshots(events, entities, CUTOFFS, spec, con=duckdb_con)
    rng = np.random.default_rng(4)
    chosen = full[rng.random(len(full)) < 0.4][["entity_id", "as_of"]]
    # Some entities only at early cutoffs: the last cutoff need not hold every entity.
    last = full["as_of"].max()
    dropped = chosen[chosen["as_of"] == last]["entity_id"].iloc[:5]
    chosen = chosen[~((chosen["as_of"] == last) & chosen["entity_id"].isin(dropped))]
    assert (chosen["entity_id"].isin(dropped) & (chosen["as_of"] < last)).any()

    built = build_snapshots(events, entities, CUTOFFS, spec, con=duckdb_con, population=chosen)

    expected = full.merge(chosen, on=["entity_id", "as_of"]).sort_values(["as_of", "entity_id"])
    got = built.sort_values(["as_of", "entity_id"])
    assert len(got) == len(chosen) < len(full)
    pd.testing.assert_frame_equal(
        got.reset_index(drop=True), expected.reset_index(drop=True), check_exact=True
    )
