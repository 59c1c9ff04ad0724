"""Declarative feature definitions: one place for every engagement feature.

Every feature has a machine name, a dtype, a one-line human description (a
``str.format`` template with ``{value}``, later turned into reason text), the
human *concept* it belongs to (reason codes sum contributions per concept) and
a *group* (``engagement`` or ``fit``), as sales expect them split.

Adding an event type is one line in :data:`DEFAULT_EVENT_TYPES`; adding a window
is one number in :attr:`FeatureSpec.windows_days`. Event types seen in the data
but not declared here are featurised generically (counts, recency, decay, trend)
and carry their ``value`` and ``item`` (see :func:`payload_features`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from features.wording import RECENTLY, capitalised, singular_noun

FeatureGroup = Literal["engagement", "fit"]


@dataclass(frozen=True)
class EventType:
    """An event type and how people talk about it.

    Attributes:
        name: Value of ``event_type`` in the events table.
        noun: Plural noun phrase used in reason text ("pricing page visits").
        concept: Human concept its features are grouped under in reason codes.
    """

    name: str
    noun: str
    concept: str


@dataclass(frozen=True)
class FeatureDef:
    """One feature column of the feature table (like Feast's ``Field``)."""

    name: str
    dtype: Literal["float64", "int64", "category"]
    description: str
    concept: str
    group: FeatureGroup = "engagement"
    #: The description when the value shows as 1 ("1 demo request ..."), if it differs.
    singular: str | None = None
    #: The description when the value shows as 0 ("No logins recently"), if it differs.
    zero: str | None = None
    #: Whole sentences for particular values, e.g. ``(("none", "No NPS answer yet"),)``.
    worded: tuple[tuple[str, str], ...] = ()

    def describe(self, value: object) -> str:
        """Render the description with an entity's own value (missing: ``reason_text``)."""
        for shown, words in self.worded:
            if str(value).lower() == shown:
                return words
        if self.zero is not None and _shows_as(value, 0):
            return self.zero
        try:
            text = self.description.format(value=value)
        except (ValueError, TypeError):
            return self.description.format(value=str(value))
        if _shows_as(value, 1):
            if self.singular is not None:
                return self.singular
            return _ONE_DAYS.sub(r"\1 day", text)
        return text


_ONE_DAYS = re.compile(r"(?<![\d.])(1) days\b")


def _shows_as(value: object, number: int) -> bool:  # 1 for 0.6, 0 for 0.04
    try:
        shown = round(float(value), 0 if number else 1)
    except (TypeError, ValueError):
        return False
    return shown == number and abs(float(value) - number) < 0.5


DEFAULT_EVENT_TYPES: tuple[EventType, ...] = (
    EventType("email_delivered", "emails delivered", "email engagement"),
    # Opens are noisy (bots, privacy proxies pre-open mail): kept, never weighted by the rules.
    EventType("email_opened", "email opens", "email engagement"),
    EventType("email_clicked", "email link clicks", "email engagement"),
    EventType("email_unsubscribed", "unsubscribes", "unsubscribes"),
    EventType("email_bounced", "email bounces", "email engagement"),
    EventType("page_view", "page views", "website visits"),
    EventType("pricing_page_view", "pricing page visits", "pricing page visits"),
    EventType("form_submit", "form submissions", "form submissions"),
    EventType("form_error", "form errors", "form submissions"),
    EventType("content_download", "content downloads", "content downloads"),
    EventType("webinar_registered", "webinar registrations", "webinars"),
    EventType("webinar_attended", "webinars attended", "webinars"),
    EventType("demo_request", "demo requests", "demo requests"),
    EventType("login", "logins", "logins"),
    EventType("feature_use", "feature uses", "product usage"),
    EventType("session", "sessions", "product usage"),
    EventType("nps_answer", "NPS answers", "NPS"),
    EventType("ticket_opened", "support tickets opened", "support tickets"),
    EventType("ticket_resolved", "support tickets resolved", "support tickets"),
    EventType("purchase", "purchases", "purchases"),
)

#: NPS classes by score: promoter 9-10, passive 7-8, detractor 0-6.
NPS_PROMOTER_MIN = 9
NPS_PASSIVE_MIN = 7


@dataclass(frozen=True)
class FeatureSpec:
    """Parameters of the feature set; changing any of them changes :attr:`version`.

    Attributes:
        windows_days: Trailing windows for per-type counts.
        half_life_days: Half-life of the exponentially decayed counts.
        trend_window_days: Trend compares this many last days to the same span before.
        kpi_window_days: Window of the email KPIs, sums and averages.
        event_types: Declared event types (others are featurised generically).
        key_features: ``item`` values of ``feature_use`` that count as key features;
            ``None`` means every feature id counts.
    """

    windows_days: tuple[int, ...] = (7, 30, 90)
    half_life_days: float = 14.0
    trend_window_days: int = 30
    kpi_window_days: int = 90
    event_types: tuple[EventType, ...] = DEFAULT_EVENT_TYPES
    key_features: tuple[str, ...] | None = None
    name: str = field(default="engagement")

    @property
    def version(self) -> str:
        """Stable identifier of this feature definition (logged with every model)."""
        import hashlib

        key = repr(
            (
                self.windows_days,
                self.half_life_days,
                self.trend_window_days,
                self.kpi_window_days,
                tuple((e.name, e.noun, e.concept) for e in self.event_types),
                self.key_features,
            )
        )
        return f"{self.name}-v1-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def event_type(self, name: str) -> EventType:
        """The declared event type, or a generic one for an undeclared name."""
        for event_type in self.event_types:
            if event_type.name == name:
                return event_type
        noun = name.replace("_", " ") + " events"
        return EventType(name, noun, name.replace("_", " "))


def safe_name(event_type: str) -> str:
    """Column-safe form of an event type name (lowercase, ``[a-z0-9_]``)."""
    cleaned = re.sub(r"[^0-9a-zA-Z]+", "_", event_type).strip("_").lower()
    return cleaned or "unnamed"


def per_type_features(spec: FeatureSpec, event_type: str) -> list[FeatureDef]:
    """Generic features every event type gets (declared or not)."""
    et = spec.event_type(event_type)
    base = safe_name(event_type)
    defs = [
        FeatureDef(
            f"{base}_count_{w}d",
            "int64",
            f"{{value:.0f}} {et.noun} in the last {w} days",
            et.concept,
            singular=f"1 {singular_noun(et.noun)} in the last {w} days",
        )
        for w in spec.windows_days
    ]
    t = spec.trend_window_days
    defs += [
        FeatureDef(
            f"{base}_days_since_last",
            "float64",
            f"Last of the {et.noun} {{value:.0f}} days ago (empty: never)",
            et.concept,
        ),
        FeatureDef(
            f"{base}_decayed",
            "float64",
            RECENTLY.get(event_type, f"Had {et.noun} recently")
            + f" ({{value:.1f}} recent {et.noun})",
            et.concept,
            zero=f"No {et.noun} recently",
        ),
        FeatureDef(
            f"{base}_trend",
            "float64",
            f"Change in {et.noun}: {{value:+.0f}} in the last {t} days against the {t} before",
            et.concept,
        ),
    ]
    return defs


def payload_features(spec: FeatureSpec, event_type: str) -> list[FeatureDef]:
    """What an undeclared event type carries: its ``value`` and ``item`` per window.

    Per window: the sum and the mean of the non-missing ``value`` (minutes, clicks,
    scores) and the number of distinct ``item``. The columns follow the type's name
    alone, so the column set is known from the types seen: a type without values
    gives a sum of 0, an empty mean and 0 items, which no model can split on.
    """
    et = spec.event_type(event_type)
    base, one = safe_name(event_type), singular_noun(et.noun)
    defs: list[FeatureDef] = []
    for w in spec.windows_days:
        defs += [
            FeatureDef(
                f"{base}_value_sum_{w}d",
                "float64",
                f"Values of the {et.noun} in the last {w} days add up to {{value:,.1f}}",
                et.concept,
            ),
            FeatureDef(
                f"{base}_value_mean_{w}d",
                "float64",
                f"Average value per {one} in the last {w} days: {{value:,.1f}} "
                "(empty: none with a value)",
                et.concept,
            ),
            FeatureDef(
                f"{base}_distinct_items_{w}d",
                "int64",
                f"{{value:.0f}} different items in the {et.noun} of the last {w} days",
                et.concept,
                singular=f"1 item in the {et.noun} of the last {w} days",
            ),
        ]
    return defs


def special_features(spec: FeatureSpec) -> list[FeatureDef]:
    """Features beyond the generic per-type set (KPIs, product usage, NPS, tickets)."""
    k = spec.kpi_window_days
    return [
        FeatureDef("tenure_days", "float64", "Known for {value:.0f} days", "tenure", "fit"),
        FeatureDef(
            "days_since_last_event",
            "float64",
            "No activity of any kind for {value:.0f} days (empty: never active)",
            "recent activity",
        ),
        FeatureDef(
            "active_days_30d",
            "int64",
            "Active on {value:.0f} of the last 30 days",
            "recent activity",
        ),
        FeatureDef(
            "login_active_days_28d",
            "int64",
            "Logged in on {value:.0f} of the last 28 days",
            "logins",
        ),
        FeatureDef(
            "login_active_weeks_4w",
            "int64",
            "Logged in during {value:.0f} of the last 4 weeks",
            "logins",
        ),
        FeatureDef(
            "session_minutes_30d",
            "float64",
            "{value:.0f} minutes in the product in the last 30 days",
            "product usage",
            singular="1 minute in the product in the last 30 days",
        ),
        FeatureDef(
            "avg_session_minutes_30d",
            "float64",
            "Average session of {value:.0f} minutes over the last 30 days (empty: no session)",
            "product usage",
            singular="Average session of 1 minute over the last 30 days",
        ),
        FeatureDef(
            "key_features_used_30d",
            "int64",
            "Used {value:.0f} key product features in the last 30 days",
            "product usage",
            singular="Used 1 key product feature in the last 30 days",
        ),
        FeatureDef(
            "nps_latest",
            "float64",
            "Latest NPS answer: {value:.0f} out of 10 (empty: No NPS answer yet)",
            "NPS",
        ),
        FeatureDef(
            "nps_class",
            "category",
            "Latest NPS class: {value}",
            "NPS",
            worded=(("none", "No NPS answer yet"),),
        ),
        FeatureDef(
            "open_tickets",
            "int64",
            "{value:.0f} support tickets still open",
            "support tickets",
            singular="1 support ticket still open",
        ),
        FeatureDef(
            f"purchase_amount_{k}d",
            "float64",
            f"Spent {{value:,.2f}} in the last {k} days",
            "purchases",
        ),
        FeatureDef(
            "purchases_total",
            "int64",
            "{value:.0f} purchases so far",
            "purchases",
            singular="1 purchase so far",
        ),
        FeatureDef(
            "days_since_first_purchase",
            "float64",
            "First purchase {value:.0f} days ago (empty: never bought)",
            "purchases",
        ),
        FeatureDef(
            f"email_delivery_rate_{k}d",
            "float64",
            f"{{value:.0%}} of emails delivered in the last {k} days (empty: no email sent)",
            "email engagement",
        ),
        FeatureDef(
            f"email_open_rate_{k}d",
            "float64",
            f"Opened {{value:.0%}} of delivered emails in the last {k} days",
            "email engagement",
        ),
        FeatureDef(
            f"email_click_rate_{k}d",
            "float64",
            f"Clicked in {{value:.0%}} of delivered emails in the last {k} days",
            "email engagement",
        ),
        FeatureDef(
            f"email_click_to_open_rate_{k}d",
            "float64",
            f"Clicked in {{value:.0%}} of opened emails in the last {k} days",
            "email engagement",
        ),
        FeatureDef(
            f"email_unsubscribe_rate_{k}d",
            "float64",
            f"Unsubscribed from {{value:.1%}} of delivered emails in the last {k} days",
            "unsubscribes",
        ),
    ]


def fit_feature(column: str, dtype: Literal["float64", "category"]) -> FeatureDef:
    """A fit attribute passed through from the entities table."""
    label = column.replace("_", " ")
    return FeatureDef(column, dtype, f"{capitalised(label)}: {{value}}", label, "fit")


def feature_catalog(
    spec: FeatureSpec,
    event_types: list[str] | tuple[str, ...] | None = None,
    fit_columns: dict[str, Literal["float64", "category"]] | None = None,
) -> list[FeatureDef]:
    """All feature definitions, in the column order of the feature table.

    Args:
        spec: The feature set parameters.
        event_types: Event types to featurise; declared types are always included,
            undeclared ones seen in the data are appended in sorted order, each
            with its :func:`payload_features`.
        fit_columns: Fit attributes from the entities table and their dtypes.

    Returns:
        The feature definitions (not including ``entity_id`` and ``as_of``).
    """
    declared = [e.name for e in spec.event_types]
    extra = sorted(set(event_types or ()) - set(declared))
    defs: list[FeatureDef] = []
    for name in declared:
        defs += per_type_features(spec, name)
    for name in extra:
        defs += per_type_features(spec, name) + payload_features(spec, name)
    defs += special_features(spec)
    for column, dtype in (fit_columns or {}).items():
        defs.append(fit_feature(column, dtype))
    return defs
