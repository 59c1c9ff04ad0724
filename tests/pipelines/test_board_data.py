"""The board's display columns of the entities (``pipelines.board_data``)."""

from __future__ import annotations

import pandas as pd

from pipelines.board_data import board_entities
from pipelines.board_settings import BoardDisplay


def test_board_entities_keep_the_last_row_of_a_repeated_id_and_leave_missing_roles_empty():
    unique = pd.DataFrame({"entity_id": pd.Series(["e1", "e2"], dtype="str"),
                           "industry": pd.Series(["software", "retail"], dtype="str")})  # fmt: skip
    kept = board_entities(unique, BoardDisplay())
    assert kept["entity_id"].tolist() == ["e1", "e2"] and kept["name"].dtype == object
    assert kept["name"].isna().all() and kept["owner"].tolist() == [pd.NA, pd.NA]
    repeated = pd.DataFrame({"entity_id": pd.Series(["e1", "e2", "e1"], dtype="str"),
                             "industry": pd.Series(["a", "b", "c"], dtype="str")})  # fmt: skip
    kept = board_entities(repeated, BoardDisplay())
    assert kept[["entity_id", "industry"]].values.tolist() == [["e2", "b"], ["e1", "c"]]
    assert kept.index.tolist() == [0, 1]
