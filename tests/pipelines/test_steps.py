"""The pure decisions of ``pipelines.steps``, without Prefect or stores."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines import steps
from pipelines.settings import Settings

RUN_DATE = pd.Timestamp("2025-12-08", tz="UTC")


class Champion:
    """Just what ``retrain_due`` reads of a model: its metadata."""

    def __init__(self, trained_at: str) -> None:
        self.metadata = {"trained_at": trained_at}


@pytest.mark.parametrize(
    ("trained_at", "kwargs", "due", "words"),
    [
        ("2025-12-01", {}, False, "7 days old; no retrain"),
        ("2025-11-20", {}, True, "18 days old (limit 14)"),
        ("2025-12-01", {"drift_psi": 0.05}, False, "no retrain"),
        ("2025-12-01", {"drift_psi": 0.3}, True, "drift flagged: score PSI 0.300 above 0.1"),
        ("2025-12-08", {"drift_psi": 0.3}, False, "trained today"),
        ("2025-12-09", {}, False, "after this run date; kept"),
        ("2025-11-01", {"trained_already": "churn v3 promoted"}, False, "already trained"),
    ],
)
def test_retrain_due_on_age_drift_and_earlier_training(trained_at, kwargs, due, words):
    settings = Settings(model={"retrain_max_age_days": 14}, schedule={"psi_warn": 0.1})
    decided, why = steps.retrain_due(settings, Champion(trained_at), None, RUN_DATE, **kwargs)
    assert (decided, words in why) == (due, True), why
    assert steps.retrain_due(settings, None, None, RUN_DATE) == (True, "no champion yet")


def test_a_training_record_is_found_for_its_date_only_and_a_damaged_one_is_ignored(tmp_path):
    settings = Settings(output={"dir": tmp_path})
    assert steps.trained_for_date(settings, "churn", RUN_DATE) is None
    steps._record_training(settings, "churn", RUN_DATE, {"decision": "churn v2 promoted"})
    assert steps.trained_for_date(settings, "churn", RUN_DATE) == "churn v2 promoted"
    assert steps.trained_for_date(settings, "conversion", RUN_DATE) is None
    assert steps.trained_for_date(settings, "churn", RUN_DATE + pd.Timedelta(days=1)) is None
    (tmp_path / "training" / "churn-2025-12-08.json").write_text("{not json")
    assert steps.trained_for_date(settings, "churn", RUN_DATE) is None


def test_the_summary_warns_of_model_columns_the_feature_table_lacks():
    from tests.models.test_explain import make_model
    from tests.models.test_scoring import AS_OF, make_inputs, run

    models = {"conversion": make_model("conversion", seed=0, n=2000), "churn": None}
    features, entities, rules = make_inputs()
    dropped = models["conversion"].feature_names[0]
    lacking = features.drop(columns=[dropped])
    scored = run(models, inputs=(lacking, entities, rules))
    inputs = steps.LoadedInputs(
        pd.DataFrame(), entities, pd.DataFrame(), {"entities": len(entities)}
    )

    summary = steps.summarise(Settings(), inputs, lacking, scored, models, {}, {}, AS_OF)
    complete = steps.summarise(Settings(), inputs, features, scored, models, {}, {}, AS_OF)

    assert [w for w in summary.warnings if "scored as missing" in w] == [
        f"The conversion model reads 1 column this run's feature table lacks ({dropped}), "
        "scored as missing. A renamed or dropped source column does this, or a text column "
        "now unique per entity."
    ]
    assert not [w for w in complete.warnings if "scored as missing" in w]
