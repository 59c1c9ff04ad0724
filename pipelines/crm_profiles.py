"""CRM profiles: which import files a CRM takes and what their columns are called.

A profile (``crm.profile``) names the files of one run's CRM export and the CRM field
of every column; ``crm.fields`` renames any column over the profile's defaults:

- ``generic`` (default): ``batch-0001.csv ...`` with every changed record, leads and
  customers together, under the ``Leadscore_*`` names the export has always used.
- ``salesforce``: ``Lead-batch-0001.csv ...`` for leads not converted by the run date
  and ``Contact-batch-0001.csv ...`` for customers (converted leads included), keyed
  by ``Id``, with custom-field API names (``Leadscore_Score__c``).
- ``hubspot``: ``contacts-batch-0001.csv ...``, keyed by ``hs_object_id`` (the
  Record ID), with lowercase internal property names (``leadscore_score``).

Every file of a profile has the columns of :data:`RECORD_COLUMNS`, in that order;
the records and the files are written by :mod:`pipelines.crm_export`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

#: The profiles ``crm.profile`` accepts.
ProfileName = Literal["generic", "salesforce", "hubspot"]

#: What one CRM record holds, in file order (the keys of ``crm.fields``): the entity's
#: ``crm_id``; the 0-100 ``score``, its ``band`` and the ``reasons`` in short text;
#: the conversion and churn probabilities in percent (empty where the entity's kind
#: has none); the run date ``as_of`` (``YYYY-MM-DD``); ``scored_at`` (UTC); ``status``.
RECORD_COLUMNS: tuple[str, ...] = (
    "crm_id", "score", "band", "reasons", "conversion_percent", "churn_percent",
    "as_of", "scored_at", "status",
)  # fmt: skip

#: Column -> field of the ``generic`` profile, Salesforce-style custom-field names
#: (``Id`` is the record key).
CRM_FIELDS: Mapping[str, str] = {
    "crm_id": "Id",
    "score": "Leadscore_Score__c",
    "band": "Leadscore_Band__c",
    "reasons": "Leadscore_Reasons__c",
    "conversion_percent": "Leadscore_Conversion_Probability__c",
    "churn_percent": "Leadscore_Churn_Probability__c",
    "as_of": "Leadscore_As_Of__c",
    "scored_at": "Leadscore_Scored_At__c",
    "status": "Leadscore_Status__c",
}

#: Column -> HubSpot internal property name (``hs_object_id`` is the Record ID).
HUBSPOT_FIELDS: Mapping[str, str] = {
    column: "hs_object_id" if column == "crm_id" else f"leadscore_{column}"
    for column in RECORD_COLUMNS
} | {
    "conversion_percent": "leadscore_conversion_probability",
    "churn_percent": "leadscore_churn_probability",
}


@dataclass(frozen=True)
class CrmProfile:
    """The files of one CRM export and the field name of each column.

    Attributes:
        name: The profile's name (``crm.profile``).
        fields: Column of :data:`RECORD_COLUMNS` -> CRM field, in file order.
        files: File stem -> the entity kinds its records have (``None``: every kind);
            files are named ``STEM-0001.csv``.
    """

    name: str
    fields: Mapping[str, str]
    files: Mapping[str, tuple[str, ...] | None]


PROFILES: Mapping[str, CrmProfile] = {
    "generic": CrmProfile("generic", CRM_FIELDS, {"batch": None}),
    "salesforce": CrmProfile(
        "salesforce", CRM_FIELDS, {"Lead-batch": ("lead",), "Contact-batch": ("customer",)}
    ),
    "hubspot": CrmProfile("hubspot", HUBSPOT_FIELDS, {"contacts-batch": ("lead", "customer")}),
}


def crm_profile(name: str = "generic", fields: Mapping[str, str] | None = None) -> CrmProfile:
    """The profile ``name`` with its field names renamed by ``fields``.

    Args:
        name: A key of :data:`PROFILES`.
        fields: ``{column: CRM field}`` over the profile's defaults (``crm.fields``).

    Returns:
        The profile, its fields in the order of :data:`RECORD_COLUMNS`.

    Raises:
        ValueError: For an unknown profile or column (naming the closest valid one),
            an empty field name, or two columns with the same field name.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown CRM profile {name!r} {_closest(name, PROFILES)}")
    profile = PROFILES[name]
    renamed = dict(fields or {})
    for column, field in renamed.items():
        if column not in RECORD_COLUMNS:
            raise ValueError(f"unknown CRM column {column!r} {_closest(column, RECORD_COLUMNS)}")
        if not str(field).strip():
            raise ValueError(f"the CRM field name of column {column!r} is empty")
    merged = {column: str(renamed.get(column, profile.fields[column])).strip()
              for column in RECORD_COLUMNS}  # fmt: skip
    seen: dict[str, str] = {}
    for column, field in merged.items():
        if field in seen:
            raise ValueError(
                f"CRM columns {seen[field]!r} and {column!r} both have the field name {field!r}"
            )
        seen[field] = column
    return CrmProfile(profile.name, merged, profile.files)


def _closest(word: str, valid: Mapping[str, object] | tuple[str, ...]) -> str:
    """``(did you mean 'x'?)``, or the valid names in brackets."""
    close = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.6)
    return f"(did you mean {close[0]!r}?)" if close else f"(valid: {', '.join(valid)})"
