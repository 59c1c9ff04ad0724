"""The model registry's listing, read without importing mlflow.

``leadscore models`` only reads a few rows, but importing mlflow (and the model stack
behind :mod:`models.tracking`) takes tens of seconds on a busy machine. This module
reads the two stores users have directly:

* the embedded store (``sqlite:///path/mlflow.db``), opened read-only with
  :mod:`sqlite3` (MLflow's tables ``registered_models``, ``model_versions``,
  ``registered_model_aliases``, ``latest_metrics`` and ``tags``), and
* a tracking server (``http://`` or ``https://``) through its REST API
  (``registered-models/get``, ``model-versions/search``, ``runs/get``) with
  :mod:`urllib`.

:func:`list_versions` returns ``None`` for any other store, for a schema it does not
know and for client settings only mlflow honours (certificates, other auth, a
workspace): callers then use :func:`models.tracking_registry.list_models`, which gives
the same rows.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import pickle
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from features.targets import TARGET_NAMES
from features.targets import target as target_named

if TYPE_CHECKING:
    from models.model import TrainedModel

log = logging.getLogger(__name__)

#: Metrics shown by ``leadscore models`` and compared for promotion.
KEY_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")
#: Run tags shown with a version.
_RUN_TAGS = ("feature_set_version", "out_of_time")
#: MLflow's stage of a version deleted from the registry (kept as a row in SQLite).
_DELETED_STAGE = "Deleted_Internal"
#: The workspace of a store without workspaces (MLflow's ``DEFAULT_WORKSPACE_NAME``).
_DEFAULT_WORKSPACE = "default"
#: Client settings only mlflow's own client honours: with any of them set, use mlflow.
_MLFLOW_ONLY_SETTINGS = (
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_WORKSPACE",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version as ``leadscore models`` lists it."""

    model: str
    version: int
    #: Its aliases, sorted and comma-separated (``""`` when none).
    aliases: str
    #: Registration time (UTC).
    created: datetime
    run_id: str | None
    feature_set_version: str
    #: The run's ``out_of_time`` tag (``"True"``/``"False"``, ``""`` when unknown).
    out_of_time: str
    roc_auc: float
    pr_auc: float
    log_loss: float
    brier: float
    ece: float
    lift_top_decile: float
    rule_roc_auc: float


def version_row(
    model: str,
    version: str | int,
    aliases: Mapping[str, str],
    created: datetime,
    run_id: str | None,
    metrics: Mapping[str, float],
    tags: Mapping[str, str],
) -> RegisteredVersion:
    """A :class:`RegisteredVersion` from what a store holds; missing metrics are NaN.

    Args:
        model: Registered model name.
        version: Its version number.
        aliases: Every alias of the registered model -> the version it points at.
        created: Registration time.
        run_id: The training run (``None`` when the store has none).
        metrics: The run's latest metrics.
        tags: The run's tags.
    """
    mine = sorted(alias for alias, to in aliases.items() if str(to) == str(version))
    numbers = {key: float(metrics.get(key, math.nan)) for key in (*KEY_METRICS, "rule_roc_auc")}
    texts = {key: tags.get(key, "") for key in _RUN_TAGS}
    return RegisteredVersion(
        model, int(version), ", ".join(mine), created, run_id, **texts, **numbers
    )


def _created(milliseconds: int | str) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(milliseconds))


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of an embedded ``sqlite:///`` store, else ``None``."""
    if not tracking_uri.startswith("sqlite:///") or "?" in tracking_uri:
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


def _sqlite_versions(path: Path, names: list[str]) -> Iterator[RegisteredVersion]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30) as db:
        for name in names:
            where = (name, _DEFAULT_WORKSPACE)
            known = "SELECT 1 FROM registered_models WHERE name = ? AND workspace = ?"
            if db.execute(known, where).fetchone() is None:
                continue
            aliases = dict(
                db.execute(
                    "SELECT alias, version FROM registered_model_aliases"
                    " WHERE name = ? AND workspace = ?",
                    where,
                )
            )
            versions = db.execute(
                "SELECT version, creation_time, run_id FROM model_versions"
                " WHERE name = ? AND workspace = ? AND current_stage != ?",
                (*where, _DELETED_STAGE),
            ).fetchall()
            for version, created, run_id in versions:
                metrics = {
                    key: math.nan if is_nan else value
                    for key, value, is_nan in db.execute(
                        "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?",
                        (run_id,),
                    )
                }
                tags = dict(db.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)))
                yield version_row(name, version, aliases, _created(created), run_id, metrics, tags)


class _Server:
    """GET requests to a tracking server's REST API (``/api/2.0/mlflow/...``)."""

    def __init__(self, tracking_uri: str):
        parts = urllib.parse.urlsplit(tracking_uri)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.headers = {"Accept": "application/json"}
        user = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
        password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        if user and password:
            pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = float(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120"))

    def get(self, endpoint: str, **query: str | int) -> dict | None:
        """The JSON answer of ``endpoint``, or ``None`` when the resource does not exist."""
        url = f"{self.base}/api/2.0/mlflow/{endpoint}?{urllib.parse.urlencode(query)}"
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310 - http(s) only
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.load(response)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise


def _server_versions(server: _Server, names: list[str]) -> Iterator[RegisteredVersion]:
    for name in names:
        registered = server.get("registered-models/get", name=name)
        if registered is None:
            continue
        aliases = {
            a["alias"]: a["version"] for a in registered["registered_model"].get("aliases", [])
        }
        page: dict[str, str | int] = {"filter": f"name = '{name}'", "max_results": 10_000}
        while True:
            found = server.get("model-versions/search", **page) or {}
            for mv in found.get("model_versions", []):
                run_id = mv.get("run_id") or None
                data = (server.get("runs/get", run_id=run_id) or {}) if run_id else {}
                data = data.get("run", {}).get("data", {})
                metrics = {m["key"]: float(m["value"]) for m in data.get("metrics", [])}
                tags = {t["key"]: t["value"] for t in data.get("tags", [])}
                created = _created(mv["creation_timestamp"])
                yield version_row(name, mv["version"], aliases, created, run_id, metrics, tags)
            if not found.get("next_page_token"):
                break
            page["page_token"] = found["next_page_token"]


def list_versions(
    tracking_uri: str, targets: tuple[str, ...] = TARGET_NAMES
) -> list[RegisteredVersion] | None:
    """Registered versions of the targets' models, newest first, read without mlflow.

    Args:
        tracking_uri: ``Settings.tracking_uri``.
        targets: Targets whose registered models to list.

    Returns:
        The rows :func:`models.tracking_registry.list_models` gives, sorted by model
        and then version, newest first; ``None`` when only mlflow can read the store.
    """
    names = [target_named(t).name for t in targets]
    path = sqlite_path(tracking_uri)
    if path is not None:
        try:
            rows = list(_sqlite_versions(path, names))
        except sqlite3.OperationalError:  # a schema other than the one we know, or locked
            return None
    elif urllib.parse.urlsplit(tracking_uri).scheme in ("http", "https"):
        if any(os.environ.get(setting) for setting in _MLFLOW_ONLY_SETTINGS):
            return None
        rows = list(_server_versions(_Server(tracking_uri), names))
    else:
        return None
    return sorted(rows, key=lambda row: (row.model, -row.version))


def undecided_versions(tracking_uri: str, names: tuple[str, ...] = TARGET_NAMES) -> int | None:
    """Versions without a promotion decision, orphan tag or alias, read without mlflow.

    The run's start looks for versions a dead training run left behind
    (:func:`models.tracking_registry.mark_orphans`); importing mlflow to find none costs
    seconds, so an embedded SQLite store is asked first.

    Returns:
        How many there are (0: nothing to mark), or ``None`` when the store is not an
        embedded SQLite file (ask mlflow).
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    if not path.exists():
        return 0
    decided = ("decision", "leadscore.orphan")  # tracking_registry.DECISION_TAG, ORPHAN_TAG
    query = (
        "SELECT count(*) FROM model_versions v WHERE v.name = ? AND v.workspace = ?"
        " AND v.current_stage != ?"
        " AND NOT EXISTS (SELECT 1 FROM model_version_tags t WHERE t.name = v.name"
        "   AND t.workspace = v.workspace AND t.version = v.version AND t.key IN (?, ?))"
        " AND NOT EXISTS (SELECT 1 FROM registered_model_aliases a WHERE a.name = v.name"
        "   AND a.workspace = v.workspace AND a.version = v.version)"
    )
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with sqlite3.connect(uri, uri=True, timeout=30) as db:
            return sum(
                db.execute(query, (name, _DEFAULT_WORKSPACE, _DELETED_STAGE, *decided)).fetchone()[
                    0
                ]
                for name in names
            )
    except sqlite3.Error:
        return None  # an older or newer schema: mlflow knows


@dataclass(frozen=True)
class ChampionFile:
    """Where a target's ``@champion`` is, as the embedded store says.

    Attributes:
        name: The registered model.
        version: The version the alias points at, ``None`` without a champion.
        model_file: Its pickled :class:`~models.model.TrainedModel` (``None`` without one).
        orphan: The version is tagged ``leadscore.orphan`` (never loaded).
    """

    name: str
    version: str | None
    model_file: Path | None = None
    orphan: bool = False

    def load(self) -> TrainedModel | None:
        """The champion as :func:`models.tracking_registry.load_champion` gives it, or ``None``."""
        if self.orphan:
            log.warning("%s v%s is an orphan version: not loaded as the champion", self.name,
                        self.version)  # fmt: skip
            return None
        if self.model_file is None:
            log.debug("no @champion for %s", self.name)
            return None
        with open(self.model_file, "rb") as handle:
            model: TrainedModel = pickle.load(handle)  # noqa: S301 - our own registry
        model.metadata = {**model.metadata, "registered_version": self.version, "alias": "champion"}
        return model


def champion_file(tracking_uri: str, name: str) -> ChampionFile | None:
    """The ``@champion`` of a registered model in an embedded store, read without mlflow.

    :func:`models.tracking_registry.load_champion` asks mlflow, whose import costs
    seconds of every nightly; for a ``sqlite:///`` store whose artifacts are local
    files this reads the alias, the orphan tag and the version's artifact folder from
    the database (read-only) and names the pickle mlflow would download.

    Args:
        tracking_uri: ``Settings.tracking_uri``.
        name: Registered model name (``conversion`` or ``churn``).

    Returns:
        The champion's version and file, or ``None`` when only mlflow can tell (another
        store, a schema we do not know, artifacts that are not local files).
    """
    path = sqlite_path(tracking_uri)
    if path is None or not path.exists():
        return None
    if any(os.environ.get(setting) for setting in _MLFLOW_ONLY_SETTINGS):
        return None  # a workspace, say: mlflow knows which rows are its
    uri = f"{path.resolve().as_uri()}?mode=ro"
    where = (name, _DEFAULT_WORKSPACE)
    try:
        with sqlite3.connect(uri, uri=True, timeout=30) as db:
            alias = db.execute(
                "SELECT version FROM registered_model_aliases"
                " WHERE name = ? AND workspace = ? AND alias = 'champion'",
                where,
            ).fetchone()
            if alias is None:
                return ChampionFile(name, None)
            version = str(alias[0])
            orphan = db.execute(
                "SELECT 1 FROM model_version_tags WHERE name = ? AND workspace = ?"
                " AND version = ? AND key = 'leadscore.orphan'",  # tracking_registry.ORPHAN_TAG
                (*where, version),
            ).fetchone()
            if orphan is not None:
                return ChampionFile(name, version, orphan=True)
            row = db.execute(
                "SELECT storage_location FROM model_versions WHERE name = ? AND workspace = ?"
                " AND version = ? AND current_stage != ?",
                (*where, version, _DELETED_STAGE),
            ).fetchone()
    except sqlite3.Error:
        return None  # an older or newer schema: mlflow knows
    location = urllib.parse.urlsplit(row[0] or "") if row else None
    if location is None or location.scheme != "file" or location.netloc:
        return None
    # mlflow downloads the version's folder; the pickle is in its artifacts/ (see
    # models.tracking.MODEL_ARTIFACT and tracking_registry.load_version).
    model_file = Path(urllib.parse.unquote(location.path)) / "artifacts" / "trained_model.pkl"
    return ChampionFile(name, version, model_file) if model_file.is_file() else None
