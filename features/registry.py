"""The feature registry: every churn feature by name, with its meaning, unit and reason.

A :class:`Feature` is a named value with a plain-language description, a unit, a window
and, when it can push churn risk up in a way a retention agent can act on, a reason
template rendered with the customer's own numbers by :func:`render_reason`. How it is
computed is declared here too: the aggregations (:class:`Aggregation`) it needs per
(snapshot, customer) over one source (see :data:`SOURCES`), and the expression that turns those
aggregates (and the snapshot's ``cutoff``) into the value. :mod:`features.build` runs them.

Windows are whole local days before the snapshot: a ``_30d`` feature sees rows dated in
``[cutoff(d - 30), cutoff(d))``, where ``cutoff`` is :func:`features.build.snapshot_cutoff`.

Row columns the aggregations read (prepared in :mod:`features.build`):

* ``interactions``: one row per (snapshot, interaction opened in its lookback period):
  ``cutoff``, ``opened_at``, ``channel``, ``in_7d``/``in_30d``/``in_90d`` (opened in the
  window), ``is_complaint``, ``is_public_complaint``, ``answered`` / ``resolved`` (first
  response / resolution strictly before the cutoff), ``response_hours`` /
  ``resolution_hours`` (null unless answered / resolved), ``known_transfers``,
  ``known_csat``, ``known_reopened`` (values final only once resolved before the cutoff;
  null or false otherwise) and ``is_repeat`` (opened within 7 days of the customer's
  previous contact).
* ``activity``: the activity rows themselves (``occurred_at``, ``event_type_index`` - the
  type's position in the model's event types -, ``value``), summed over windows
  (``window_sum``) or read at the latest row before the cutoff (``last``, to the second).
* ``subscriptions``: one row per (snapshot, subscription started in its lookback period):
  ``in_30d``/``in_90d`` and ``is_downgrade`` (MRR below the customer's previous subscription).
* ``customer``: one row per (snapshot, customer in the population) with the customer's
  attributes and the covering subscriptions: ``cutoff``, ``signup_at``, ``segment``,
  ``monthly_value``, ``covering_mrr``, ``covering_plan``; no aggregation.
"""

from __future__ import annotations

import hashlib
import math
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import polars as pl

GROUPS: Final = (
    "open_problems",
    "responsiveness",
    "public_moments",
    "effort",
    "satisfaction",
    "engagement",
    "commercial",
)
"""Feature groups, in the order features are listed."""

SOURCES: Final = ("interactions", "activity", "subscriptions", "customer")
"""Per-snapshot frames a feature aggregates (see the module docstring)."""

WINDOWS: Final = (7, 30, 90)
"""Feature windows in days."""

LONGEST_WINDOW_DAYS: Final = 90
"""The longest window any feature uses (also the engagement trend's 30 + 60 days)."""

REPEAT_CONTACT_DAYS: Final = 7
"""A contact opened within this many days of the customer's previous contact is a repeat."""

LOW_CSAT_MAX: Final = 2
"""CSAT scores up to this value (1-2) count as low."""

_HOURS_PER_MICROSECOND: Final = 1.0 / 3_600_000_000
_DAYS_PER_MICROSECOND: Final = 1.0 / 86_400_000_000

AggregateKind = Literal[
    "sum", "mean", "max", "min", "p90", "label_at_max", "label_at_min", "window_sum", "last"
]
"""How an :class:`Aggregation` reduces its row values per (snapshot, customer).

Over a source's snapshot rows (``interactions``, ``subscriptions``): ``sum``, ``mean``,
``max``, ``min``, ``p90`` (the linear-interpolated 90th percentile), ``label_at_max`` /
``label_at_min`` (the ``label`` column of the row with the largest / smallest value; ties:
smallest label). Null row values never count.

Over the dated rows of ``activity`` (no per-snapshot rows): ``window_sum`` sums the value
over the rows dated in the aggregation's ``window``; ``last`` is the value of the latest
row in the lookback period.
"""


def _has_value(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _positive(value: Any) -> bool:
    return _has_value(value) and float(value) > 0


def _any_value(value: Any) -> bool:
    return _has_value(value)


def _at_least(threshold: float) -> Callable[[Any], bool]:
    return lambda value: _has_value(value) and float(value) >= threshold


def _at_most(threshold: float) -> Callable[[Any], bool]:
    return lambda value: _has_value(value) and float(value) <= threshold


@dataclass(frozen=True)
class Aggregation:
    """A per-(snapshot, customer) aggregate of a row value of a source's snapshot rows."""

    name: str
    """Column the group-by produces; internal ones start with an underscore."""
    value: pl.Expr = field(compare=False, repr=False)
    """Element-wise expression over the source's snapshot rows; null rows do not count."""
    how: AggregateKind
    label: str | None = None
    """For ``label_at_max`` / ``label_at_min``: the column whose value is returned."""
    window: tuple[int, int] | None = None
    """For ``window_sum``: ``(start, end)`` days before the snapshot, the rows dated in
    ``[cutoff(d - start), cutoff(d - end))``."""


@dataclass(frozen=True)
class Feature:
    """One named feature (or a helper column that is not a model feature)."""

    name: str
    """Column name, a snake_case domain name."""
    group: str
    """One of :data:`GROUPS`."""
    description: str
    """One sentence: what the value means."""
    unit: str
    """Unit of the value: complaints, hours, days, contacts, ratio, currency, category, ..."""
    window_days: int | None
    """Days before the snapshot the feature looks at; None: at the snapshot itself."""
    reason: str | None
    """Plain-language template with ``{placeholders}`` naming columns of the same feature row
    (``{x:#noun}`` renders a rounded count and the noun, singular or plural; ``{x:#a|b}``
    names both forms); None: never used as a reason."""
    categorical: bool = False
    source: str = "interactions"
    """The per-snapshot frame the aggregations read, one of :data:`SOURCES`."""
    aggregations: tuple[Aggregation, ...] = ()
    """What the group-by per (snapshot, customer) computes for this feature."""
    expr: pl.Expr | None = field(default=None, compare=False, repr=False)
    """The value from the aggregated columns, ``cutoff`` and (for ``customer``) the customer row."""
    default: float | None = None
    """Value for a customer of the population without rows in ``source`` (0 for counts)."""
    reason_applies: Callable[[Any], bool] = field(default=_positive, compare=False, repr=False)
    """When the reason is meaningful for a value (default: the value is positive)."""
    model_feature: bool = True
    """False for helper columns: built next to the features for reasons, never fed to a model."""


def _window(days: int) -> pl.Expr:
    return pl.col(f"in_{days}d")


def elapsed_hours(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """Hours from ``earlier`` to ``later`` (fractional).

    Computed as microseconds times a constant, never as a division: Polars divides long
    arrays by a scalar through its reciprocal but single values exactly, so a division
    would make a value depend on how many rows happened to be processed together.
    """
    return (later - earlier).dt.total_microseconds().cast(pl.Float64) * _HOURS_PER_MICROSECOND


def elapsed_days(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    """Days from ``earlier`` to ``later`` (fractional); see :func:`elapsed_hours`."""
    return (later - earlier).dt.total_microseconds().cast(pl.Float64) * _DAYS_PER_MICROSECOND


def _days_before_cutoff(instant: pl.Expr) -> pl.Expr:
    return elapsed_days(pl.col("cutoff"), instant)


def _hours_before_cutoff(instant: pl.Expr) -> pl.Expr:
    return elapsed_hours(pl.col("cutoff"), instant)


def _ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    return pl.when(denominator > 0).then(numerator.cast(pl.Float64) / denominator)


def _simple(
    name: str,
    group: str,
    description: str,
    unit: str,
    window_days: int | None,
    reason: str | None,
    value: pl.Expr,
    how: AggregateKind,
    *,
    source: str = "interactions",
    reason_applies: Callable[[Any], bool] = _positive,
) -> Feature:
    """A feature that is one aggregate; a sum is a count or total and defaults to 0.

    A ``window_sum`` (activity) covers the ``window_days`` before the snapshot.
    """
    window = (window_days or 0, 0) if how == "window_sum" else None
    return Feature(
        name,
        group,
        description,
        unit,
        window_days,
        reason,
        source=source,
        aggregations=(Aggregation(name, value, how, window=window),),
        expr=pl.col(name),
        default=0.0 if how in ("sum", "window_sum") else None,
        reason_applies=reason_applies,
    )


def _elapsed(
    name: str,
    group: str,
    description: str,
    unit: Literal["days", "hours"],
    window_days: int | None,
    reason: str | None,
    instant: pl.Expr,
    how: Literal["min", "max", "last"],
    *,
    source: str = "interactions",
    reason_applies: Callable[[Any], bool] = _positive,
) -> Feature:
    """Time from the earliest (``min``) or latest (``max``, ``last``) instant to the cutoff."""
    raw = f"_{name}_at"
    before = _days_before_cutoff if unit == "days" else _hours_before_cutoff
    return Feature(
        name,
        group,
        description,
        unit,
        window_days,
        reason,
        source=source,
        aggregations=(Aggregation(raw, instant, how),),
        expr=before(pl.col(raw)),
        reason_applies=reason_applies,
    )


_IS_COMPLAINT = pl.col("is_complaint")
_IS_PUBLIC = pl.col("is_public_complaint")
_ANSWERED = pl.col("answered")
_RESOLVED = pl.col("resolved")
_OPEN_COMPLAINT = _IS_COMPLAINT & ~_RESOLVED
_RESPONSE = pl.col("response_hours")


def _open_problems() -> list[Feature]:
    features = [
        _simple(
            "open_complaints",
            "open_problems",
            "Complaints opened in the lookback period and not resolved before the snapshot.",
            "complaints",
            None,
            "{open_complaints:#complaint} still open, the oldest for "
            "{oldest_open_complaint_days:#day}",
            _OPEN_COMPLAINT,
            "sum",
        ),
        _elapsed(
            "oldest_open_complaint_days",
            "open_problems",
            "Age at the snapshot of the oldest complaint still open; null when none is open.",
            "days",
            None,
            "a complaint has been open for {oldest_open_complaint_days:#day}",
            pl.when(_OPEN_COMPLAINT).then(pl.col("opened_at")),
            "min",
        ),
    ]
    features += [
        _simple(
            f"complaints_{days}d",
            "open_problems",
            f"Complaints opened in the last {days} days.",
            "complaints",
            days,
            f"{{complaints_{days}d:#complaint}} in the last {days} days",
            _IS_COMPLAINT & _window(days),
            "sum",
        )
        for days in WINDOWS
    ]
    features += [
        _simple(
            f"reopened_complaints_{days}d",
            "open_problems",
            f"Complaints opened in the last {days} days that had been reopened (known once "
            "finally resolved before the snapshot).",
            "complaints",
            days,
            f"{{reopened_complaints_{days}d:#complaint}} had to be reopened "
            f"in the last {days} days",
            _IS_COMPLAINT & pl.col("known_reopened") & _window(days),
            "sum",
        )
        for days in (30, 90)
    ]
    return features


def _responsiveness() -> list[Feature]:
    features: list[Feature] = []
    slow = _at_least(10)
    for days in WINDOWS:
        answered = pl.when(_window(days)).then(_RESPONSE)
        opened = f"contacts opened in the last {days} days and answered before the snapshot"
        features += [
            _simple(
                f"first_response_hours_mean_{days}d",
                "responsiveness",
                f"Mean hours to the first response for {opened}.",
                "hours",
                days,
                f"first answers took {{first_response_hours_mean_{days}d:.0f}} h on average "
                f"in the last {days} days",
                answered,
                "mean",
                reason_applies=slow,
            ),
            _simple(
                f"first_response_hours_max_{days}d",
                "responsiveness",
                f"Longest time to the first response among {opened}.",
                "hours",
                days,
                f"the slowest first answer in the last {days} days took "
                f"{{first_response_hours_max_{days}d:.0f}} h",
                answered,
                "max",
                reason_applies=slow,
            ),
        ]
        if days == LONGEST_WINDOW_DAYS:
            features.append(
                _simple(
                    f"first_response_hours_p90_{days}d",
                    "responsiveness",
                    f"90th percentile (linear) of hours to the first response for {opened}.",
                    "hours",
                    days,
                    f"one first answer in ten took {{first_response_hours_p90_{days}d:.0f}} h "
                    f"or more in the last {days} days",
                    answered,
                    "p90",
                    reason_applies=slow,
                )
            )
    for hours in (10, 24):
        features += [
            _simple(
                f"answered_after_{hours}h_{days}d",
                "responsiveness",
                f"Contacts opened in the last {days} days whose first response came more than "
                f"{hours} h after opening (and before the snapshot).",
                "contacts",
                days,
                f"{{answered_after_{hours}h_{days}d:#contact}} answered only after more than "
                f"{hours} h in the last {days} days",
                _window(days) & (pl.col("response_hours") > hours),
                "sum",
            )
            for days in WINDOWS
        ]
    features += [
        _simple(
            f"unanswered_contacts_{days}d",
            "responsiveness",
            f"Contacts opened in the last {days} days with no first response before the snapshot.",
            "contacts",
            days,
            f"{{unanswered_contacts_{days}d:#contact}} from the last {days} days still "
            "without an answer",
            _window(days) & ~_ANSWERED,
            "sum",
        )
        for days in WINDOWS
    ]
    features.append(
        _elapsed(
            "longest_unanswered_wait_hours_30d",
            "responsiveness",
            "Hours the longest-waiting contact opened in the last 30 days had waited at the "
            "snapshot without a first response; null when all were answered.",
            "hours",
            30,
            "a contact has been waiting {longest_unanswered_wait_hours_30d:.0f} h "
            "for a first answer",
            pl.when(_window(30) & ~_ANSWERED).then(pl.col("opened_at")),
            "min",
            reason_applies=slow,
        )
    )
    for days, how in ((30, "mean"), (90, "mean"), (90, "max")):
        name = f"resolution_hours_{how}_{days}d"
        what = "Mean hours" if how == "mean" else "Longest time"
        reason = (
            f"problems took {{{name}:.0f}} h to resolve on average in the last {days} days"
            if how == "mean"
            else f"one problem took {{{name}:.0f}} h to resolve in the last {days} days"
        )
        features.append(
            _simple(
                name,
                "responsiveness",
                f"{what} from opening to resolution for contacts opened in the last {days} days "
                "and resolved before the snapshot.",
                "hours",
                days,
                reason,
                pl.when(_window(days)).then(pl.col("resolution_hours")),
                "mean" if how == "mean" else "max",
                reason_applies=_at_least(24),
            )
        )
    return features


def _public_moments() -> list[Feature]:
    features = [
        _simple(
            f"public_complaints_{days}d",
            "public_moments",
            f"Complaints opened in the last {days} days on a public channel or marked public.",
            "complaints",
            days,
            f"{{public_complaints_{days}d:#public complaint}} in the last {days} days",
            _IS_PUBLIC & _window(days),
            "sum",
        )
        for days in WINDOWS
    ]
    for days in (30, 90):
        name = f"public_complaints_unanswered_{days}d"
        reason = f"{{{name}:#public complaint}} from the last {days} days still without an answer"
        if days == 30:
            reason += ", the oldest on {unanswered_public_channel_30d}"
        features.append(
            _simple(
                name,
                "public_moments",
                f"Public complaints opened in the last {days} days with no first response "
                "before the snapshot.",
                "complaints",
                days,
                reason,
                _IS_PUBLIC & _window(days) & ~_ANSWERED,
                "sum",
            )
        )
    features.append(
        _simple(
            "public_first_response_hours_max_90d",
            "public_moments",
            "Longest time to the first response among public complaints opened in the last "
            "90 days and answered before the snapshot.",
            "hours",
            90,
            "the first answer to a public complaint on {slowest_public_channel_90d} took "
            "{public_first_response_hours_max_90d:.0f} h",
            pl.when(_IS_PUBLIC & _window(90)).then(_RESPONSE),
            "max",
            reason_applies=_at_least(4),
        )
    )
    return features


def _effort() -> list[Feature]:
    features = [
        _simple(
            f"contacts_{days}d",
            "effort",
            f"Contacts (interactions of any kind) opened in the last {days} days.",
            "contacts",
            days,
            f"{{contacts_{days}d:#contact}} with us in the last {days} days",
            _window(days),
            "sum",
            reason_applies=_at_least(3),
        )
        for days in WINDOWS
    ]
    features += [
        _simple(
            f"transfers_per_contact_{days}d",
            "effort",
            f"Mean transfers per contact among contacts opened in the last {days} days and "
            "resolved before the snapshot (transfers are final only once resolved).",
            "ratio",
            days,
            f"transferred {{transfers_per_contact_{days}d:.1f}} times per contact "
            f"in the last {days} days",
            pl.when(_window(days)).then(pl.col("known_transfers")),
            "mean",
            reason_applies=_at_least(1),
        )
        for days in (30, 90)
    ]
    features += [
        _simple(
            f"repeat_contacts_{days}d",
            "effort",
            f"Contacts opened in the last {days} days within {REPEAT_CONTACT_DAYS} days of "
            "the customer's previous contact.",
            "contacts",
            days,
            f"had to get back in touch within {REPEAT_CONTACT_DAYS} days "
            f"{{repeat_contacts_{days}d:#time}} in the last {days} days",
            pl.col("is_repeat") & _window(days),
            "sum",
        )
        for days in (30, 90)
    ]
    return features


def _satisfaction() -> list[Feature]:
    features = [
        _simple(
            f"csat_mean_{days}d",
            "satisfaction",
            f"Mean CSAT (1-5) of contacts opened in the last {days} days and resolved before "
            "the snapshot.",
            "score",
            days,
            f"average satisfaction {{csat_mean_{days}d:.1f}} of 5 in the last {days} days",
            pl.when(_window(days)).then(pl.col("known_csat")),
            "mean",
            reason_applies=_at_most(3),
        )
        for days in (30, 90)
    ]
    features += [
        _simple(
            f"low_csat_{days}d",
            "satisfaction",
            f"CSAT scores of 1-{LOW_CSAT_MAX} for contacts opened in the last {days} days and "
            "resolved before the snapshot.",
            "scores",
            days,
            f"{{low_csat_{days}d:#low satisfaction score}} (1-{LOW_CSAT_MAX}) "
            f"in the last {days} days",
            _window(days) & (pl.col("known_csat") <= LOW_CSAT_MAX),
            "sum",
        )
        for days in WINDOWS
    ]
    return features


_ONE: Final = pl.lit(1, dtype=pl.Int32)

_ACTIVITY_EVENTS_30D = Aggregation("activity_events_30d", _ONE, "window_sum", window=(30, 0))
_ACTIVITY_EVENTS_PRIOR_60D = Aggregation(
    "_activity_events_prior_60d", _ONE, "window_sum", window=(90, 30)
)
_ACTIVITY_TREND = _ratio(
    pl.col(_ACTIVITY_EVENTS_30D.name), pl.col(_ACTIVITY_EVENTS_PRIOR_60D.name) * 0.5
)


def _engagement() -> list[Feature]:
    features = [
        _simple(
            f"activity_events_{days}d",
            "engagement",
            f"Activity events of the model's event types in the last {days} days.",
            "events",
            days,
            f"{{activity_events_{days}d:#activity event}} in the last {days} days",
            _ONE,
            "window_sum",
            source="activity",
            reason_applies=_any_value,
        )
        for days in WINDOWS
    ]
    features += [
        Feature(
            "activity_trend_30d",
            "engagement",
            "Activity events in the last 30 days divided by the 30-day average of the 60 days "
            "before (1: steady, 0: stopped); null without activity in those 60 days.",
            "ratio",
            90,
            "activity down {activity_drop_30d:.0%} in the last 30 days against the 60 days before",
            source="activity",
            aggregations=(_ACTIVITY_EVENTS_30D, _ACTIVITY_EVENTS_PRIOR_60D),
            expr=_ACTIVITY_TREND,
            reason_applies=lambda v: _has_value(v) and v < 0.9,
        ),
        _elapsed(
            "days_since_last_activity",
            "engagement",
            "Days from the customer's last activity event (of the model's event types) in the "
            "lookback period, to the second, to the snapshot; null without any.",
            "days",
            None,
            "no activity for {days_since_last_activity:#day}",
            pl.col("occurred_at"),
            "last",
            source="activity",
            reason_applies=_at_least(7),
        ),
        _elapsed(
            "days_since_last_contact",
            "engagement",
            "Days from the customer's last contact (interaction) in the lookback period to the "
            "snapshot; null without any.",
            "days",
            None,
            None,
            pl.col("opened_at"),
            "max",
        ),
    ]
    return features


_SIGNED_UP = pl.col("signup_at") < pl.col("cutoff")


def _customer_feature(
    name: str, description: str, unit: str, expr: pl.Expr, *, categorical: bool = False
) -> Feature:
    return Feature(
        name,
        "commercial",
        description,
        unit,
        None,
        None,
        categorical=categorical,
        source="customer",
        expr=expr,
    )


def _commercial() -> list[Feature]:
    return [
        _customer_feature(
            "tenure_days",
            "Days from the customer's signup to the snapshot.",
            "days",
            pl.when(_SIGNED_UP).then(_days_before_cutoff(pl.col("signup_at"))),
        ),
        _customer_feature(
            "current_mrr",
            "Monthly recurring revenue of the subscriptions covering the snapshot (summed); "
            "null without one or without a known MRR.",
            "currency",
            pl.col("covering_mrr"),
        ),
        _customer_feature(
            "plan",
            "Plan of the most recently started subscription covering the snapshot.",
            "category",
            pl.col("covering_plan"),
            categorical=True,
        ),
        *(
            _simple(
                f"plan_downgrades_{days}d",
                "commercial",
                f"Subscriptions started in the last {days} days with a lower MRR than the "
                "customer's previous subscription.",
                "downgrades",
                days,
                f"{{plan_downgrades_{days}d:#plan downgrade}} in the last {days} days",
                pl.col("is_downgrade") & _window(days),
                "sum",
                source="subscriptions",
            )
            for days in (30, 90)
        ),
        _customer_feature(
            "segment",
            "The customer's segment.",
            "category",
            pl.when(_SIGNED_UP).then(pl.col("segment")),
            categorical=True,
        ),
        _customer_feature(
            "customer_value",
            "The customer's monthly value (basis of value at risk).",
            "currency",
            pl.when(_SIGNED_UP).then(pl.col("monthly_value")),
        ),
    ]


def _channel_helper(
    name: str, description: str, window_days: int, value: pl.Expr, how: AggregateKind
) -> Feature:
    return Feature(
        name,
        "public_moments",
        f"Helper for reasons, not a model feature: {description}",
        "category",
        window_days,
        None,
        categorical=True,
        aggregations=(Aggregation(name, value, how, label="channel"),),
        expr=pl.col(name),
        model_feature=False,
    )


FEATURES: Final[tuple[Feature, ...]] = (
    *_open_problems(),
    *_responsiveness(),
    *_public_moments(),
    *_effort(),
    *_satisfaction(),
    *_engagement(),
    *_commercial(),
)
"""All static model features, in model order (event-type features follow them)."""

HELPERS: Final[tuple[Feature, ...]] = (
    _channel_helper(
        "slowest_public_channel_90d",
        "channel of the public complaint with the slowest first response among those opened "
        "in the last 90 days and answered before the snapshot (ties: channel name).",
        90,
        pl.when(_IS_PUBLIC & _window(90)).then(_RESPONSE),
        "label_at_max",
    ),
    _channel_helper(
        "unanswered_public_channel_30d",
        "channel of the oldest public complaint of the last 30 days still without a first "
        "response at the snapshot (ties: channel name).",
        30,
        pl.when(_IS_PUBLIC & _window(30) & ~_ANSWERED).then(pl.col("opened_at")),
        "label_at_min",
    ),
    Feature(
        "activity_drop_30d",
        "engagement",
        "Helper for reasons, not a model feature: 1 - activity_trend_30d, the share by which "
        "activity fell in the last 30 days (negative: it grew).",
        "ratio",
        90,
        None,
        source="activity",
        aggregations=(_ACTIVITY_EVENTS_30D, _ACTIVITY_EVENTS_PRIOR_60D),
        expr=1.0 - _ACTIVITY_TREND,
        model_feature=False,
    ),
)
"""Columns built next to the features for reason sentences; never model features."""


EVENT_FEATURE_SUFFIXES: Final = ("events_30d", "events_90d", "value_90d")
"""Features generated per activity event type, as ``activity_<slug>_<suffix>``."""

_EVENT_FEATURE_NAME = re.compile(
    r"^activity_(?P<slug>[a-z0-9_]+?)_(?P<suffix>" + "|".join(EVENT_FEATURE_SUFFIXES) + r")$"
)
_SLUG_INVALID = re.compile(r"[^a-z0-9]+")


def event_type_slug(event_type: str) -> str:
    """The snake_case part of column names for an event type (``"Page View"`` -> ``page_view``).

    Types without any ASCII letter or digit get ``t`` plus a short hash of the type.
    """
    slug = _SLUG_INVALID.sub("_", event_type.lower()).strip("_")
    if not slug:
        slug = "t" + hashlib.sha1(event_type.encode(), usedforsecurity=False).hexdigest()[:8]
    return slug


def _event_feature(slug: str, suffix: str, type_index: int | None) -> Feature:
    name = f"activity_{slug}_{suffix}"
    is_type = pl.lit(False) if type_index is None else pl.col("event_type_index") == type_index
    if suffix == "value_90d":
        return _simple(
            name,
            "engagement",
            f"Sum of the value of '{slug}' activity events in the last 90 days.",
            "value",
            90,
            f"'{slug}' value {{{name}:,.2f}} in the last 90 days",
            pl.when(is_type).then(pl.col("value")).otherwise(0.0).fill_null(0.0),
            "window_sum",
            source="activity",
            reason_applies=_any_value,
        )
    days = int(suffix.removeprefix("events_").removesuffix("d"))
    return _simple(
        name,
        "engagement",
        f"'{slug}' activity events in the last {days} days.",
        "events",
        days,
        f"{{{name}:#'{slug}' event}} in the last {days} days",
        is_type.cast(pl.Int32),
        "window_sum",
        source="activity",
        reason_applies=_any_value,
    )


def event_type_features(event_types: Sequence[str]) -> list[Feature]:
    """The generated features for the model's event types, in model order.

    Their expressions read ``event_type_index``, the position of a row's event type in
    ``event_types``. Raises ``ValueError`` when two types share a column name.
    """
    slugs = [event_type_slug(t) for t in event_types]
    seen: dict[str, str] = {}
    for event_type, slug in zip(event_types, slugs, strict=True):
        if slug in seen:
            raise ValueError(
                f"activity event types {seen[slug]!r} and {event_type!r} both map to the "
                f"column name part {slug!r}; keep only one of them"
            )
        seen[slug] = event_type
    return [
        _event_feature(slug, suffix, index)
        for index, slug in enumerate(slugs)
        for suffix in EVENT_FEATURE_SUFFIXES
    ]


_BY_NAME: Final[dict[str, Feature]] = {f.name: f for f in (*FEATURES, *HELPERS)}


def feature_columns(event_types: Sequence[str]) -> list[str]:
    """Model feature names in model order: the static features, then per event type."""
    return [f.name for f in FEATURES] + [f.name for f in event_type_features(event_types)]


def helper_columns() -> list[str]:
    """Columns :func:`features.build.build_features` adds after the features for reasons."""
    return [f.name for f in HELPERS]


def categorical_features() -> list[str]:
    """Names of the categorical model features (string columns)."""
    return [f.name for f in FEATURES if f.categorical]


def feature_schema(event_types: Sequence[str]) -> pl.Schema:
    """Schema of the frame :func:`features.build.build_features` returns."""
    columns: dict[str, pl.DataType] = {"snapshot_date": pl.Date(), "customer_id": pl.Int64()}
    for feature in (*FEATURES, *event_type_features(event_types), *HELPERS):
        columns[feature.name] = pl.String() if feature.categorical else pl.Float64()
    return pl.Schema(columns)


def get_feature(name: str) -> Feature:
    """The registry entry of a feature or helper column, including event-type features.

    Raises ``KeyError`` for an unknown name.
    """
    feature = _BY_NAME.get(name)
    if feature is not None:
        return feature
    match = _EVENT_FEATURE_NAME.match(name)
    if match is None:
        raise KeyError(f"unknown feature {name!r}")
    return _event_feature(match["slug"], match["suffix"], None)


class _ReasonFormatter(string.Formatter):
    """``str.format`` plus ``{x:#noun}`` / ``{x:#noun|plural}``: a rounded count and noun."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec.startswith("#"):
            singular, _, plural = format_spec[1:].partition("|")
            count = round(float(value))
            return f"{count} {singular if count == 1 else (plural or singular + 's')}"
        return str(super().format_field(value, format_spec))


_FORMATTER: Final = _ReasonFormatter()


def reason_fields(template: str) -> list[str]:
    """Column names a reason template refers to."""
    return [
        name.split(".")[0].split("[")[0]
        for _, name, _, _ in _FORMATTER.parse(template)
        if name is not None
    ]


def render_reason(name: str, row: Mapping[str, Any]) -> str | None:
    """The reason sentence for feature ``name`` with the customer's own numbers.

    ``row`` maps column names of the customer's feature row (features and helper columns)
    to values. Returns None when the feature has no template, when the template does not
    apply to the value (e.g. a count of 0) or when a value it needs is null or missing.
    Raises ``KeyError`` for an unknown feature.
    """
    feature = get_feature(name)
    if feature.reason is None:
        return None
    if not feature.reason_applies(row.get(name)):
        return None
    values = {field_name: row.get(field_name) for field_name in reason_fields(feature.reason)}
    if not all(_has_value(v) for v in values.values()):
        return None
    return _FORMATTER.vformat(feature.reason, (), values)
