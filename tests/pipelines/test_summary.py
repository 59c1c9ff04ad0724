import numpy as np
import pandas as pd

from features.input_report import InputReport
from pipelines.settings_sections import ScheduleSettings
from pipelines.sources import Inputs
from pipelines.summary import RunSummary, band_moves, summarise


def test_band_moves_counts_changes_and_new_entities():
    scored = pd.DataFrame(
        {
            "band": ["high", "medium", "medium", "at-risk", None],
            "previous_band": ["medium", "medium", None, "high", "high"],
        }
    )
    assert band_moves(scored) == {"high -> at-risk": 1, "medium -> high": 1, "new -> medium": 1}


def test_band_moves_equal_a_row_by_row_count_for_text_and_object_columns():
    rng = np.random.default_rng(7)
    levels = np.array(["high", "medium", "at-risk", None], dtype=object)
    band = levels[rng.integers(0, 4, 5000)]
    previous = levels[rng.integers(0, 4, 5000)]
    expected: dict[str, int] = {}
    for now, was in zip(band, previous, strict=True):
        was = "new" if was is None else was
        if now is not None and was != now:
            expected[f"{was} -> {now}"] = expected.get(f"{was} -> {now}", 0) + 1
    for dtype in (object, "str"):
        scored = pd.DataFrame({"band": band, "previous_band": previous}, dtype=dtype)
        moves = band_moves(scored)
        assert moves == expected
        assert list(moves) == sorted(expected)


def test_summary_markdown_flags_count_mismatch():
    summary = RunSummary(as_of="2025-12-01", entities_in=10, rows_out=9, bands={"high": 2})
    assert not summary.counts_match
    text = summary.to_markdown()
    assert "**NO**" in text and "| high | 2 |" in text
    assert summary.to_dict()["counts_match"] is False


def test_the_summary_warns_of_model_columns_the_feature_table_lacks():
    from tests.models.test_explain import make_model
    from tests.models.test_scoring import AS_OF, make_inputs, run

    models = {"conversion": make_model("conversion", seed=0, n=2000), "churn": None}
    features, entities, rules = make_inputs()
    dropped = models["conversion"].feature_names[0]
    lacking = features.drop(columns=[dropped])
    scored = run(models, inputs=(lacking, entities, rules))
    report = InputReport(events=0, entities=len(entities), outcomes=0, duplicate_events=0,
                         future_events=0)  # fmt: skip
    inputs = Inputs(pd.DataFrame(), entities, pd.DataFrame(), report)
    schedule = ScheduleSettings()

    summary = summarise(inputs, lacking, scored, models, {}, {}, AS_OF, schedule)
    complete = summarise(inputs, features, scored, models, {}, {}, AS_OF, schedule)

    assert [w for w in summary.warnings if "scored as missing" in w] == [
        f"The conversion model reads 1 column this run's feature table lacks ({dropped}), "
        "scored as missing. A renamed or dropped source column does this, or a text column "
        "now unique per entity."
    ]
    assert not [w for w in complete.warnings if "scored as missing" in w]
