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

* ``interactions``: one row per (snapshot, interaction opened in its lookback period), and
  per (snapshot, older complaint still open at its cutoff) with ``in_lookback`` false:
  ``cutoff``, ``opened_at``, ``channel``, ``in_7d``/``in_30d``/``in_90d`` (opened in the
  window), ``is_complaint``, ``is_public_complaint``, ``answered`` / ``resolved`` (first
  response / resolution strictly before the cutoff), ``response_hours`` /
  ``resolution_hours`` (null unless answered / resolved), ``known_transfers``,
  ``known_csat``, ``known_reopened`` (values final only once resolved before the cutoff;
  null or false otherwise) and ``is_repeat`` (opened within 7 days of the customer's
  previous contact).
* ``activity``: the activity rows themselves (``occurred_at``, ``event_type_index`` - the
  type's position in the model's event types, null for other types -, ``value``), summed
  over windows (``window_sum``) or read at the latest row before the cutoff (``last``, to
  the second).
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

import numpy as np
import numpy.typing as npt
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

NEW_CUSTOMER_DAYS: Final = 365
"""A tenure below this many days can be a reason ("customer for only 45 days")."""

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


class ReasonApplies:
    """When a reason template applies to the feature's own value: a callable with a description.

    A null (or NaN) value never applies. ``description`` is what the feature reference shows
    (``"> 0"``, ``">= 10"``, ``"any value"``).
    """

    def __init__(self, description: str, test: Callable[[float], bool] | None) -> None:
        self.description = description
        self._test = test

    def __call__(self, value: Any) -> bool:
        if not _has_value(value):
            return False
        return True if self._test is None else self._test(float(value))

    def __str__(self) -> str:
        return self.description

    def __repr__(self) -> str:
        return f"ReasonApplies({self.description!r})"


def _at_least(threshold: float) -> ReasonApplies:
    return ReasonApplies(f">= {threshold:g}", lambda value: value >= threshold)


def _at_most(threshold: float) -> ReasonApplies:
    return ReasonApplies(f"<= {threshold:g}", lambda value: value <= threshold)


def _below(threshold: float) -> ReasonApplies:
    return ReasonApplies(f"< {threshold:g}", lambda value: value < threshold)


_positive: Final = ReasonApplies("> 0", lambda value: value > 0)
_any_value: Final = ReasonApplies("any value", None)
"""Any non-null value (also text, for categorical features)."""


@dataclass(frozen=True)
class Typical:
    """A reason compares the customer's value with tonight's typical value.

    Typical is the median of the feature over the whole scored population of the night
    (nulls ignored), computed by :mod:`models.reasons`. The reason applies only when the
    value differs from typical in ``direction`` by both a factor (``ratio``) and an
    absolute amount (``min_gap``, in the feature's unit), and the sentence then ends with
    ``text`` in parentheses, e.g. "12 'login' events in the last 30 days (typical: 25)".
    Values are assumed non-negative (counts, sums, durations, money).
    """

    direction: Literal["below", "above", "either"]
    """``below``: only a value under typical is a reason (less activity); ``above``: only
    one over it (more contacts); ``either``: both (event types whose meaning is data's)."""
    ratio: float = 1.5
    """Below: ``value <= typical / ratio``; above: ``value >= typical * ratio``."""
    min_gap: float = 1.0
    """And ``|value - typical| >= min_gap``."""
    text: str = "typical: {typical:,.0f}"
    """Appended in parentheses; ``{typical}`` is the typical value (same format specs as
    reason templates)."""

    def differs_array(
        self, values: npt.NDArray[np.float64], typical: float
    ) -> npt.NDArray[np.bool_]:
        """Element-wise :meth:`differs` (NaN: False)."""
        below = (values <= typical / self.ratio) & (typical - values >= self.min_gap)
        above = (values >= typical * self.ratio) & (values - typical >= self.min_gap)
        if self.direction == "below":
            return below
        if self.direction == "above":
            return above
        return below | above

    def differs(self, value: float, typical: float) -> bool:
        """Whether ``value`` differs from ``typical`` enough, in an allowed direction."""
        return bool(self.differs_array(np.array([value], dtype=np.float64), typical)[0])

    def describe(self) -> str:
        """The rule in words, for the feature reference."""
        sides = {
            "below": f"<= typical / {self.ratio:g}",
            "above": f">= typical x {self.ratio:g}",
            "either": f"<= typical / {self.ratio:g} or >= typical x {self.ratio:g}",
        }
        return f"{sides[self.direction]}, by >= {self.min_gap:g}"


_DAYS: Final = "#day|days|less than a day"
"""Format spec of a duration in days: "less than a day" under 1, else a rounded count."""
_DAYS_ABOVE: Final = Typical("above", min_gap=3.0, text=f"typical: {{typical:{_DAYS}}}")
_HOURS_ABOVE: Final = Typical("above", min_gap=4.0, text="typical: {typical:hours}")
_COUNT_EITHER: Final = Typical("either")
_MONEY_EITHER: Final = Typical("either", text="typical: {typical:,.2f}")


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
    reason_applies: ReasonApplies = field(default=_positive, compare=False, repr=False)
    """When the reason is meaningful for the feature's own value (default: positive)."""
    model_feature: bool = True
    """False for helper columns: built next to the features for reasons, never fed to a model."""
    topic: str | None = None
    """What the reason is about; a customer gets at most one reason per topic (the feature
    with the largest positive contribution). None: the feature's own name."""
    typical: Typical | None = None
    """When set, the reason also needs the value to differ from tonight's typical value
    (see :class:`Typical`) and says so."""
    context: bool = False
    """A context reason (who the customer is: tenure, plan, price, segment, value) rather
    than something that happened: it ranks after every actionable reason."""

    @property
    def reason_topic(self) -> str:
        """The topic of the feature's reason (its own name when none is set)."""
        return self.topic or self.name


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
    reason_applies: ReasonApplies = _positive,
    topic: str | None = None,
    typical: Typical | None = None,
    context: bool = False,
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
        topic=topic,
        typical=typical,
        context=context,
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
    reason_applies: ReasonApplies = _positive,
    topic: str | None = None,
    typical: Typical | None = None,
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
        topic=topic,
        typical=typical,
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
            "Complaints opened before the snapshot (however long ago) and not resolved before it.",
            "complaints",
            None,
            "{open_complaints:#complaint} still open, {open_complaints:?|the oldest }opened "
            f"{{oldest_open_complaint_days:{_DAYS}}} ago",
            _OPEN_COMPLAINT,
            "sum",
            topic="open_complaints",
        ),
        _elapsed(
            "oldest_open_complaint_days",
            "open_problems",
            "Age at the snapshot of the oldest complaint still open (however long ago it was "
            "opened); null when none is open.",
            "days",
            None,
            f"a complaint has been open for {{oldest_open_complaint_days:{_DAYS}}}",
            pl.when(_OPEN_COMPLAINT).then(pl.col("opened_at")),
            "min",
            topic="open_complaints",
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
            topic="complaints",
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
            topic="reopened_complaints",
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
                f"first answers took {{first_response_hours_mean_{days}d:hours}} on average "
                f"in the last {days} days",
                answered,
                "mean",
                reason_applies=slow,
                topic="slow_first_answers",
            ),
            _simple(
                f"first_response_hours_max_{days}d",
                "responsiveness",
                f"Longest time to the first response among {opened}.",
                "hours",
                days,
                f"the slowest first answer in the last {days} days took "
                f"{{first_response_hours_max_{days}d:hours}}",
                answered,
                "max",
                reason_applies=slow,
                topic="slow_first_answers",
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
                    f"one first answer in ten took {{first_response_hours_p90_{days}d:hours}} "
                    f"or more in the last {days} days",
                    answered,
                    "p90",
                    reason_applies=slow,
                    topic="slow_first_answers",
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
                topic="slow_first_answers",
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
            topic="unanswered_contacts",
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
            "a contact has been waiting {longest_unanswered_wait_hours_30d:hours} "
            "for a first answer",
            pl.when(_window(30) & ~_ANSWERED).then(pl.col("opened_at")),
            "min",
            reason_applies=slow,
            topic="unanswered_contacts",
        )
    )
    for days, how in ((30, "mean"), (90, "mean"), (90, "max")):
        name = f"resolution_hours_{how}_{days}d"
        what = "Mean hours" if how == "mean" else "Longest time"
        reason = (
            f"problems took {{{name}:hours}} to resolve on average in the last {days} days"
            if how == "mean"
            else f"one problem took {{{name}:hours}} to resolve in the last {days} days"
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
                topic="slow_resolution",
                typical=_HOURS_ABOVE,
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
            topic="public_complaints",
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
                topic="unanswered_public_complaints",
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
            "{public_first_response_hours_max_90d:hours}",
            pl.when(_IS_PUBLIC & _window(90)).then(_RESPONSE),
            "max",
            reason_applies=_at_least(4),
            topic="slow_public_answer",
            typical=_HOURS_ABOVE,
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
            topic="contacts",
            typical=Typical("above", min_gap=2.0),
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
            f"{{transfers_per_contact_{days}d:.1f}} transfers per contact in the last {days} days",
            pl.when(_window(days)).then(pl.col("known_transfers")),
            "mean",
            reason_applies=_at_least(1),
            topic="transfers",
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
            topic="repeat_contacts",
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
            topic="low_satisfaction",
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
            topic="low_satisfaction",
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
            f"Activity events (of any type) in the last {days} days.",
            "events",
            days,
            f"{{activity_events_{days}d:#activity event}} in the last {days} days",
            _ONE,
            "window_sum",
            source="activity",
            reason_applies=_any_value,
            topic="activity",
            typical=Typical("below", min_gap=2.0),
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
            reason_applies=_below(0.9),
            topic="activity",
        ),
        _elapsed(
            "days_since_last_activity",
            "engagement",
            "Days from the customer's last activity event (of any type) in the lookback "
            "period, to the second, to the snapshot; null without any.",
            "days",
            None,
            f"no activity for {{days_since_last_activity:{_DAYS}}}",
            pl.col("occurred_at"),
            "last",
            source="activity",
            reason_applies=_at_least(7),
            topic="activity",
            typical=_DAYS_ABOVE,
        ),
        _elapsed(
            "days_since_last_contact",
            "engagement",
            "Days from the customer's last contact (interaction) in the lookback period to the "
            "snapshot; null without any.",
            "days",
            None,
            f"last contact with us {{days_since_last_contact:{_DAYS}}} ago",
            pl.when(pl.col("in_lookback")).then(pl.col("opened_at")),
            "max",
            reason_applies=_any_value,
            topic="last_contact",
            typical=Typical("either", ratio=2.0, min_gap=3.0, text=f"typical: {{typical:{_DAYS}}}"),
        ),
    ]
    return features


_SIGNED_UP = pl.col("signup_at") < pl.col("cutoff")


def _customer_feature(
    name: str,
    description: str,
    unit: str,
    expr: pl.Expr,
    *,
    categorical: bool = False,
    reason: str | None = None,
    reason_applies: ReasonApplies = _any_value,
    topic: str | None = None,
    typical: Typical | None = None,
) -> Feature:
    """A customer attribute; its reason (if any) is a context reason."""
    return Feature(
        name,
        "commercial",
        description,
        unit,
        None,
        reason,
        categorical=categorical,
        source="customer",
        expr=expr,
        reason_applies=reason_applies,
        topic=topic,
        typical=typical,
        context=True,
    )


def _commercial() -> list[Feature]:
    return [
        _customer_feature(
            "tenure_days",
            "Days from the customer's signup to the snapshot.",
            "days",
            pl.when(_SIGNED_UP).then(_days_before_cutoff(pl.col("signup_at"))),
            reason=f"customer for only {{tenure_days:{_DAYS}}}",
            reason_applies=_below(NEW_CUSTOMER_DAYS),
            typical=Typical("below", ratio=2.0, min_gap=30.0, text=f"typical: {{typical:{_DAYS}}}"),
        ),
        _customer_feature(
            "current_mrr",
            "Monthly recurring revenue of the subscriptions covering the snapshot (summed); "
            "null without one or without a known MRR.",
            "currency",
            pl.col("covering_mrr"),
            reason="pays {current_mrr:,.2f} a month for the subscription",
            topic="plan",
            typical=_MONEY_EITHER,
        ),
        _customer_feature(
            "plan",
            "Plan of the most recently started subscription covering the snapshot.",
            "category",
            pl.col("covering_plan"),
            categorical=True,
            reason="on the '{plan}' plan",
            topic="plan",
        ),
        *(
            _simple(
                f"plan_downgrades_{days}d",
                "commercial",
                f"Subscriptions started in the last {days} days with a lower MRR than the "
                "customer's previous subscription (the latest earlier one still running in "
                "the lookback period).",
                "downgrades",
                days,
                f"{{plan_downgrades_{days}d:#plan downgrade}} in the last {days} days",
                pl.col("is_downgrade") & _window(days),
                "sum",
                source="subscriptions",
                topic="plan_downgrades",
            )
            for days in (30, 90)
        ),
        _customer_feature(
            "segment",
            "The customer's segment.",
            "category",
            pl.when(_SIGNED_UP).then(pl.col("segment")),
            categorical=True,
            reason="in the '{segment}' segment",
        ),
        _customer_feature(
            "customer_value",
            "The customer's monthly value (basis of value at risk).",
            "currency",
            pl.when(_SIGNED_UP).then(pl.col("monthly_value")),
            reason="monthly value {customer_value:,.2f}",
            typical=_MONEY_EITHER,
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


MAX_FEATURE_NAME_LENGTH: Final = 64
"""Longest feature name: reason codes are stored in ``varchar(64)`` columns."""

MAX_EVENT_TYPE_SLUG_LENGTH: Final = (
    MAX_FEATURE_NAME_LENGTH
    - len("activity__")
    - max(len(suffix) for suffix in EVENT_FEATURE_SUFFIXES)
)
"""Longest slug, so that every ``activity_<slug>_<suffix>`` name fits."""


def event_type_slug(event_type: str) -> str:
    """The snake_case part of column names for an event type (``"Page View"`` -> ``page_view``).

    Types without any ASCII letter or digit get ``t`` plus a short hash of the type. A slug
    longer than :data:`MAX_EVENT_TYPE_SLUG_LENGTH` is cut and ends in a short hash of the
    whole type, so long types that share a beginning stay apart.
    """
    digest = hashlib.sha1(event_type.encode(), usedforsecurity=False).hexdigest()[:8]
    slug = _SLUG_INVALID.sub("_", event_type.lower()).strip("_")
    if not slug:
        return "t" + digest
    if len(slug) > MAX_EVENT_TYPE_SLUG_LENGTH:
        keep = MAX_EVENT_TYPE_SLUG_LENGTH - len(digest) - 1
        slug = f"{slug[:keep].rstrip('_')}_{digest}"
    return slug


def event_type_topic(slug: str) -> str:
    """The reason topic of an event type's features (``activity_<slug>``): one reason per type."""
    return f"activity_{slug}"


def _event_feature(slug: str, suffix: str, type_index: int | None) -> Feature:
    name = f"activity_{slug}_{suffix}"
    # Activity of other types has no index (null): never of this type.
    is_type = (
        pl.lit(False)
        if type_index is None
        else (pl.col("event_type_index") == type_index).fill_null(False)
    )
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
            topic=event_type_topic(slug),
            typical=_MONEY_EITHER,
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
        topic=event_type_topic(slug),
        typical=_COUNT_EITHER,
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


_EVENT_TYPE_TOPIC = re.compile(r"^activity_[a-z0-9_]+$")


def reason_topics() -> list[str]:
    """Topics of the static features' reasons, in feature order (event types add
    ``activity_<slug>`` topics, see :func:`event_type_topic`)."""
    return list(dict.fromkeys(f.reason_topic for f in FEATURES if f.reason is not None))


def is_reason_topic(name: str) -> bool:
    """Whether ``name`` is a reason topic: a static feature's or an event type's."""
    return name in reason_topics() or _EVENT_TYPE_TOPIC.match(name) is not None


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


def _duration_from_hours(hours: float) -> str:
    """A wait or handling time as a person says it: "5 h" up to two days, then "3 days"."""
    if hours < 1:
        return "less than an hour"
    if hours < 48:
        return f"{round(hours)} h"
    return f"{round(hours / 24)} days"


class _ReasonFormatter(string.Formatter):
    """``str.format`` plus counts with their noun, and durations.

    ``{x:hours}`` renders a duration in hours as "5 h" below two days and "3 days" from
    there ("less than an hour" under one).

    ``{x:#noun}`` renders a rounded count and the noun, singular or plural (``noun + "s"``;
    ``{x:#reply|replies}`` names both forms); a count of 0 reads "no <plural>".
    ``{x:#day|days|less than a day}`` also names what a value under 1 reads as, for
    durations that must never read "0 days".

    ``{x:?one|other}`` renders ``one`` when ``x`` rounds to 1 and ``other`` otherwise, for
    words that depend on a count shown elsewhere in the sentence ("the oldest" of several).
    """

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec == "hours":
            return _duration_from_hours(float(value))
        if format_spec.startswith("?"):
            one, _, other = format_spec[1:].partition("|")
            return one if round(float(value)) == 1 else other
        if format_spec.startswith("#"):
            singular, plural, under_one = [*format_spec[1:].split("|", 2), "", ""][:3]
            plural = plural or singular + "s"
            number = float(value)
            if under_one and number < 1:
                return under_one
            count = round(number)
            if count == 0:
                return f"no {plural}"
            return f"{count} {singular if count == 1 else plural}"
        return str(super().format_field(value, format_spec))


_FORMATTER: Final = _ReasonFormatter()


def reason_fields(template: str) -> list[str]:
    """Column names a reason template refers to."""
    return [
        name.split(".")[0].split("[")[0]
        for _, name, _, _ in _FORMATTER.parse(template)
        if name is not None
    ]


def render_reason(
    name: str, row: Mapping[str, Any], typical: Mapping[str, Any] | None = None
) -> str | None:
    """The reason sentence for feature ``name`` with the customer's own numbers.

    ``row`` maps column names of the customer's feature row (features and helper columns)
    to values; ``typical`` maps feature names to tonight's typical (median) value. Returns
    None when the feature has no template, when the template does not apply to the value
    (e.g. a count of 0), when a value it needs is null or missing, or, for a feature with
    a :class:`Typical` comparison, when its typical value is unknown or the customer's
    value does not differ from it enough in the feature's direction. Raises ``KeyError``
    for an unknown feature.
    """
    feature = get_feature(name)
    if feature.reason is None:
        return None
    value = row.get(name)
    if not feature.reason_applies(value):
        return None
    values = {field_name: row.get(field_name) for field_name in reason_fields(feature.reason)}
    if not all(_has_value(v) for v in values.values()):
        return None
    sentence = _FORMATTER.vformat(feature.reason, (), values)
    if feature.typical is None:
        return sentence
    usual = (typical or {}).get(name)
    if value is None or usual is None or not _has_value(usual):
        return None
    if not feature.typical.differs(float(value), float(usual)):
        return None
    return f"{sentence} ({_FORMATTER.vformat(feature.typical.text, (), {'typical': usual})})"
