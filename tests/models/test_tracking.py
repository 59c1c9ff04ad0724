import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from models import tracking, tracking_registry
from models.train import train_model
from tests.models.conftest import PointsRule

ARTIFACTS = {
    "calibration_curve.png",
    "lift_chart.png",
    "shap_summary.png",
    "feature_importance.csv",
    "model_card.md",
    "metrics.json",
    "split.json",
}
LOGGED_METRICS = {
    "roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile", "capture_top_decile",
    "band_decile_01_rate", "rule_roc_auc", "rule_ece", "rule_recalibrated_roc_auc",
}  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory, trained):
    """One embedded store with the good model logged, registered and promoted."""
    root = tmp_path_factory.mktemp("mlflow_local")
    uri = f"sqlite:///{root / 'output' / 'mlflow.db'}"
    tracking.configure(uri)
    run_id, version = tracking.log_training_run(
        trained, {"labels": {"conversion_horizon_days": 30}, "seed": 42}
    )
    decision = tracking_registry.register_and_promote(trained, run_id, version)
    return {"uri": uri, "root": root, "run_id": run_id, "version": version, "decision": decision}


@pytest.fixture
def client(store):
    tracking.configure(store["uri"])  # another test may have pointed MLflow elsewhere
    return MlflowClient()


def test_run_has_params_metrics_and_artifacts(store, client, trained):
    run = client.get_run(store["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["feature_set_version"] == "engagement-v1-test"
    assert run.data.params["data_fingerprint"] == trained.data_fingerprint
    assert run.data.params["settings.labels.conversion_horizon_days"] == "30"
    assert set(run.data.metrics) >= LOGGED_METRICS
    assert run.data.metrics["roc_auc"] == pytest.approx(trained.metrics["model"]["roc_auc"])
    names = {a.path for a in client.list_artifacts(store["run_id"])}
    assert ARTIFACTS | {"promotion.json"} <= names
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "leadscore-conversion"
    assert experiment.artifact_location.startswith((store["root"] / "output").as_uri())


def test_model_is_registered_with_signature_and_example(store, client, trained):
    assert store["version"] == "1"
    info = mlflow.models.get_model_info(f"models:/conversion/{store['version']}")
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs.inputs] == trained.model.feature_names
    assert info.saved_input_example_info is not None
    pyfunc = mlflow.pyfunc.load_model("models:/conversion@champion")
    example = trained.model.example_input(3).astype({"industry": object})
    np.testing.assert_allclose(
        np.asarray(pyfunc.predict(example)).ravel(), trained.model.predict_proba(example)
    )


def test_first_version_becomes_champion_and_loads_with_its_booster(store, client, trained):
    decision = store["decision"]
    assert decision.promoted and decision.alias == "champion"
    assert decision.previous_champion is None
    assert str(client.get_model_version_by_alias("conversion", "champion").version) == "1"
    champion = tracking_registry.load_champion("conversion")
    features = trained.validation_features.head(20)
    np.testing.assert_allclose(
        champion.predict_proba(features), trained.model.predict_proba(features)
    )
    contributions = champion.booster.predict(champion.prepare(features), pred_contrib=True)
    assert contributions.shape == (20, len(champion.feature_names) + 1)
    assert champion.metadata["registered_version"] == "1"
    assert tracking_registry.load_champion("churn") is None


def test_worse_challenger_does_not_take_champion(store, client, training_data):
    worse = train_model(
        training_data.features, training_data.labels, training_data.as_of, "conversion",
        horizon_days=30, rule_model=PointsRule(),
        params={"num_boost_round": 1, "num_leaves": 2, "early_stopping_rounds": 1},
    )  # fmt: skip
    run_id, version = tracking.log_training_run(worse)
    decision = tracking_registry.register_and_promote(worse, run_id, version)
    assert not decision.promoted and decision.alias == "challenger"
    assert decision.previous_champion == "1"
    assert decision.numbers["new_roc_auc"] < decision.numbers["champion_roc_auc"]
    assert str(client.get_model_version_by_alias("conversion", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("conversion", "challenger").version) == version
    assert client.get_run(run_id).data.tags["promotion"] == "challenger"
    assert client.get_model_version("conversion", version).tags["decision"] == "challenger"
    logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/promotion.json")
    assert logged["numbers"]["champion_roc_auc"] == pytest.approx(
        decision.numbers["champion_roc_auc"]
    )
    listing = tracking_registry.list_models(("conversion",))
    assert list(listing["version"][:2]) == [int(version), 1]
    assert listing.set_index("version").loc[1, "aliases"] == "champion"
    assert listing["roc_auc"].notna().all()


def test_no_artifact_holds_an_entity_id(store, client, training_data):
    ids = training_data.features["entity_id"]
    artifact_root = store["root"] / "output" / "mlartifacts"
    files = [p for p in artifact_root.rglob("*") if p.is_file()]
    assert any(p.name == "trained_model.pkl" for p in files)
    for path in files:
        content = path.read_bytes()
        assert b"ent-0-" not in content, f"{path} holds an entity id"
    assert ids.str.startswith("ent-0-").all()


@pytest.mark.service
def test_training_against_a_real_mlflow_server(mlflow_server, trained):
    tracking.configure(mlflow_server["url"])
    run_id, version = tracking.log_training_run(trained)
    decision = tracking_registry.register_and_promote(trained, run_id, version)
    client = MlflowClient(tracking_uri=mlflow_server["url"], registry_uri=mlflow_server["url"])
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["ece"] == pytest.approx(trained.metrics["model"]["ece"])
    assert {a.path for a in client.list_artifacts(run_id)} >= ARTIFACTS
    registered = client.get_model_version("conversion", version)
    assert registered.run_id == run_id
    assert decision.promoted
    assert str(client.get_model_version_by_alias("conversion", "champion").version) == version
    stored = [p.name for p in Path(mlflow_server["artifacts"]).rglob("*") if p.is_file()]
    assert "model_card.md" in stored and "trained_model.pkl" in stored
    assert tracking_registry.load_champion("conversion").metadata["registered_version"] == version


_TELEMETRY_PROBE = """
import json, os
import models.tracking_registry  # imports models.tracking first, then mlflow
from mlflow.telemetry import get_telemetry_client
from mlflow.telemetry.utils import is_telemetry_disabled
print(json.dumps({
    "client": get_telemetry_client() is not None,
    "disabled": is_telemetry_disabled(),
    "env": os.environ.get("MLFLOW_DISABLE_TELEMETRY"),
}))
"""


@pytest.mark.parametrize(
    ("user_choice", "expected_env"),
    [({}, "true"), ({"MLFLOW_DISABLE_TELEMETRY": "false"}, "false")],
)
def test_mlflow_telemetry_is_off_from_import_unless_the_user_chose(user_choice, expected_env):
    # A fresh interpreter with a bare environment: no pytest or CI variable that would
    # make MLflow switch telemetry off by itself.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(user_choice)
    root = Path(__file__).resolve().parents[2]
    probe = [sys.executable, "-c", _TELEMETRY_PROBE]
    done = subprocess.run(probe, cwd=root, env=env, capture_output=True, text=True, check=True)
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["env"] == expected_env  # setdefault keeps the user's explicit value
    assert state["disabled"] and not state["client"]
