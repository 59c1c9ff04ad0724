"""The list of entities ``leadscore forget`` erased, so that they stay erased.

The list holds keyed hashes (pseudonyms), never ids, one per line, under a header
whose key check recognises the pseudonym key it was written with. ``forget`` adds
to it first (:func:`record_forgotten`); every run reads it and drops the rows of
listed entities found again in a source (:func:`drop_forgotten`). A missing or
changed key stops both rather than let erased entities back in.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.event_table import EventTable
from models.privacy import (
    PSEUDONYM_KEY_ENV,
    PseudonymKeyError,
    pseudonymise,
    pseudonymise_one,
    resolve_pseudonym_key,
)
from pipelines.atomic_files import write_text_atomic
from pipelines.settings import Settings

log = logging.getLogger(__name__)

#: Under the output folder: keyed hashes of the entity ids ``leadscore forget`` erased,
#: one per line, so that entities read again from a source stay unprofiled.
FORGOTTEN_LIST = Path("erasure") / "forgotten.txt"


@dataclass
class ForgottenList:
    """The keyed hashes of erased entities, and a hash that identifies the key."""

    path: Path
    pseudonyms: set[str]
    key_check: str | None


#: Hashed with the pseudonym key into the list's header, to recognise a changed key.
FORGOTTEN_KEY_CHECK = "leadscore forgotten-list key check"
_KEY_CHECK_PREFIX = "# key-check: "


def read_forgotten(output_dir: str | os.PathLike[str]) -> ForgottenList:
    """The entities ``leadscore forget`` erased, as keyed hashes (see :data:`FORGOTTEN_LIST`)."""
    path = Path(output_dir) / FORGOTTEN_LIST
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    stripped = [line.strip() for line in lines]
    checks = [
        line[len(_KEY_CHECK_PREFIX) :] for line in stripped if line.startswith(_KEY_CHECK_PREFIX)
    ]
    pseudonyms = {line for line in stripped if line and not line.startswith("#")}
    return ForgottenList(path, pseudonyms, checks[0] if checks else None)


def forgotten_list_text(pseudonyms: set[str], key: bytes) -> str:
    """The file content of a list of erased entities (header, key check, hashes)."""
    return (
        "# Keyed hashes of entities erased by `leadscore forget`: never profile them again.\n"
        f"{_KEY_CHECK_PREFIX}{pseudonymise_one(FORGOTTEN_KEY_CHECK, key)}\n"
        + "".join(f"{p}\n" for p in sorted(pseudonyms))
    )


def check_forgotten_key(listing: ForgottenList, key: bytes | None) -> None:
    """Refuse a missing key, or one other than the key the list was written with.

    Raises:
        PseudonymKeyError: In a sentence that says which key is needed.
    """
    erased = (
        f"{len(listing.pseudonyms):,} entities were erased earlier and are listed by keyed "
        f"hash in {listing.path}"
    )
    if key is None:
        raise PseudonymKeyError(
            f"{erased}, but {PSEUDONYM_KEY_ENV} is not set. Set it to the key in use when they "
            "were erased (a new key would not recognise them); nothing was read further."
        )
    if listing.key_check is not None and listing.key_check != pseudonymise_one(
        FORGOTTEN_KEY_CHECK, key
    ):
        raise PseudonymKeyError(
            f"{erased}, but {PSEUDONYM_KEY_ENV} is not the key in use when they were erased "
            "(the list's key check differs), so they could not be recognised. Set the "
            "original key; nothing was read further."
        )


def drop_forgotten(
    events: EventTable, entities: pd.DataFrame, outcomes: pd.DataFrame, settings: Settings
) -> tuple[EventTable, pd.DataFrame, pd.DataFrame, int]:
    """The inputs without entities erased earlier and read again from a source.

    They are dropped, events and outcomes included, rather than set to no consent: a
    "not scored" row would write the erased id back into the score tables.

    Returns:
        Events, entities and outcomes without them, and how many erased entities were
        found again.

    Raises:
        PseudonymKeyError: Entities were erased, but the key that recognises them is
            not configured.
    """
    listing = read_forgotten(settings.output.dir)
    if not listing.pseudonyms:
        return events, entities, outcomes, 0
    try:
        key: bytes | None = resolve_pseudonym_key(settings.pseudonym_key)
    except PseudonymKeyError:
        key = None
    check_forgotten_key(listing, key)
    assert key is not None
    forgotten = listing.pseudonyms
    frames = (entities, outcomes)
    id_columns = [t["entity_id"].astype("string") for t in frames]
    ids = pd.Series(pd.unique(pd.concat([*id_columns, events.entity_ids()]).dropna()))
    erased = set(ids[pseudonymise(ids, key).isin(forgotten).to_numpy(bool)])
    if not erased:
        return events, entities, outcomes, 0
    log.warning(
        "%d entities erased earlier with `leadscore forget` are in the sources again; their "
        "rows are dropped. Erase them in the source systems too.",
        len(erased),
    )
    kept = [t[~c.isin(erased).to_numpy(bool)] for t, c in zip(frames, id_columns, strict=True)]
    return events.without_entities(sorted(erased)), kept[0], kept[1], len(erased)


def record_forgotten(output_dir: str | os.PathLike[str], pseudonyms: list[str], key: bytes) -> None:
    """Add keyed hashes to the list of erased entities under ``output_dir``.

    Raises:
        PseudonymKeyError: The list was written with another key (nothing is changed).
    """
    listing = read_forgotten(output_dir)
    if listing.pseudonyms:
        check_forgotten_key(listing, key)
    write_text_atomic(forgotten_list_text(listing.pseudonyms | set(pseudonyms), key), listing.path)
