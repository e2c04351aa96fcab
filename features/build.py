"""Point-in-time churn features for many snapshot dates in one lazy query.

A snapshot date ``d`` stands for the instant :func:`snapshot_cutoff` ``(d, tz)``: the start
of day ``d`` in the configured time zone. A snapshot's features see only rows dated
strictly before that instant, and an interaction opened before it but answered or
resolved at or after it counts as unanswered / unresolved.

No Python loop runs over the data. Interactions and subscriptions are matched to the
snapshots whose lookback period contains them with two binary searches on the sorted
snapshot boundaries and one ``explode``; one ``group_by(snapshot, customer)`` per source
then evaluates the registry's aggregations. Activity, the largest table, is sorted once
and summed cumulatively; its window sums are differences of running totals looked up
just before each window's boundaries (:func:`activity_aggregates`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Final, Literal
from zoneinfo import ZoneInfo

import polars as pl

from features.registry import (
    FEATURES,
    HELPERS,
    LONGEST_WINDOW_DAYS,
    REPEAT_CONTACT_DAYS,
    WINDOWS,
    Aggregation,
    Feature,
    elapsed_hours,
    event_type_features,
    event_type_slug,
    feature_schema,
)
from warehouse.extract import COMPLAINT_KIND
from warehouse.schema import SOURCE_TABLES, contract_schema
from warehouse.settings import PUBLIC_CHANNELS

if TYPE_CHECKING:
    from warehouse.settings import Settings

LabelKind = Literal["subscription", "inactivity"]

_UTC_US: Final = pl.Datetime("us", "UTC")
SNAPSHOT_INDEX: Final = "_snapshot"
"""Index of a snapshot in the sorted, de-duplicated snapshot list."""


def snapshot_cutoff(d: date, tz: str) -> datetime:
    """The instant (UTC) a snapshot date stands for: the start of day ``d`` in ``tz``.

    Where the local midnight does not exist (a daylight-saving gap at midnight) it is the
    first instant of the day.
    """
    return datetime.combine(d, time(0), tzinfo=ZoneInfo(tz)).astimezone(UTC)


class FutureDateError(ValueError):
    """A run was asked for a day that has not begun yet in the configured time zone."""


def check_day_has_begun(as_of: date, timezone: str, now: datetime, what: str) -> datetime:
    """The cutoff of ``as_of``; raises :class:`FutureDateError` when it is after ``now``."""
    cutoff = snapshot_cutoff(as_of, timezone)
    if now < cutoff:
        raise FutureDateError(
            f"{what} as of {as_of} is not possible yet: that day begins at "
            f"{cutoff.isoformat()} ({timezone}), after now ({now.isoformat()}); "
            "use today or an earlier day"
        )
    return cutoff


def is_today(as_of: date, timezone: str, now: datetime) -> bool:
    """Whether ``now`` falls on ``as_of`` in ``timezone`` (its cutoff <= now < the next one)."""
    return (
        snapshot_cutoff(as_of, timezone)
        <= now
        < snapshot_cutoff(as_of + timedelta(days=1), timezone)
    )


@dataclass(frozen=True)
class FeatureConfig:
    """What the feature and label builders need from the settings."""

    timezone: str = "UTC"
    public_channels: tuple[str, ...] = PUBLIC_CHANNELS
    lookback_days: int = LONGEST_WINDOW_DAYS
    max_event_types: int = 12
    label_kind: LabelKind = "subscription"
    inactivity_days: int = 30
    horizon_days: int = 30

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except Exception as exc:
            raise ValueError(f"unknown time zone {self.timezone!r}") from exc
        if self.lookback_days < LONGEST_WINDOW_DAYS:
            raise ValueError(
                f"lookback_days={self.lookback_days} is shorter than the longest feature window "
                f"({LONGEST_WINDOW_DAYS} days); set lookback_days to at least {LONGEST_WINDOW_DAYS}"
            )
        if self.label_kind not in ("subscription", "inactivity"):
            raise ValueError(
                f"label_kind must be 'subscription' or 'inactivity', got {self.label_kind!r}"
            )
        for name in ("max_event_types", "inactivity_days", "horizon_days"):
            value = getattr(self, name)
            minimum = 0 if name == "max_event_types" else 1
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}")

    @property
    def history_days(self) -> int:
        """Days of history before a snapshot's cutoff that its features and population read.

        The lookback period, plus the days in which an earlier contact makes the first ones
        repeat contacts, or the inactivity period of the ``inactivity`` population when longer.
        """
        history = self.lookback_days + REPEAT_CONTACT_DAYS
        if self.label_kind == "inactivity":
            history = max(history, self.inactivity_days)
        return history

    @classmethod
    def from_settings(cls, settings: Settings) -> FeatureConfig:
        """The feature configuration of validated settings."""
        return cls(
            timezone=settings.timezone,
            public_channels=tuple(c.lower() for c in settings.public_channels),
            lookback_days=settings.lookback_days,
            max_event_types=settings.max_event_types,
            label_kind=settings.label_kind,
            inactivity_days=settings.inactivity_days,
            horizon_days=settings.horizon_days,
        )


# -- inputs -----------------------------------------------------------------------------------


def source_frame(sources: Mapping[str, pl.LazyFrame], name: str) -> pl.LazyFrame:
    """Source table ``name`` with exactly the contract's columns and dtypes.

    Timestamps may come in any time zone or precision and are converted to UTC
    microseconds; other columns are cast to the contract dtype. Raises ``ValueError``
    naming the table and columns when the table or a column is missing, or when a
    timestamp column has no time zone.
    """
    if name not in SOURCE_TABLES:
        raise ValueError(f"{name!r} is not a source table; known: {', '.join(SOURCE_TABLES)}")
    if name not in sources:
        raise ValueError(f"source table {name!r} is missing from the sources")
    frame = sources[name]
    have = frame.collect_schema()
    want = contract_schema(name)
    missing = [c for c in want if c not in have]
    if missing:
        raise ValueError(f"source table {name!r} lacks column(s): {', '.join(missing)}")
    columns: list[pl.Expr] = []
    for column, dtype in want.items():
        actual = have[column]
        if actual == dtype:
            columns.append(pl.col(column))
        elif dtype == _UTC_US:
            if not isinstance(actual, pl.Datetime) or actual.time_zone is None:
                raise ValueError(
                    f"column {name}.{column} must be a time-zone aware timestamp, got {actual}"
                )
            columns.append(
                pl.col(column).dt.convert_time_zone("UTC").dt.cast_time_unit("us").alias(column)
            )
        else:
            columns.append(pl.col(column).cast(dtype))
    return frame.select(columns)


@dataclass(frozen=True)
class Snapshots:
    """Sorted, de-duplicated snapshot dates and their boundaries (UTC instants)."""

    dates: tuple[date, ...]
    timezone: str
    lookback_days: int

    @classmethod
    def of(cls, snapshots: Sequence[date], config: FeatureConfig) -> Snapshots:
        """The snapshot list for ``snapshots`` (any order, duplicates allowed)."""
        if not snapshots:
            raise ValueError("no snapshot dates given")
        for d in snapshots:
            if isinstance(d, datetime) or not isinstance(d, date):
                raise TypeError(f"snapshot dates must be datetime.date values, got {d!r}")
        return cls(tuple(sorted(set(snapshots))), config.timezone, config.lookback_days)

    def cutoffs(self, days_before: int = 0) -> pl.Series:
        """Per snapshot, the start of the local day ``days_before`` days before it (after it
        when negative)."""
        return pl.Series(
            [snapshot_cutoff(d - timedelta(days=days_before), self.timezone) for d in self.dates],
            dtype=_UTC_US,
        )

    def table(self) -> pl.LazyFrame:
        """``_snapshot`` (index), ``snapshot_date``, ``cutoff`` and the window starts."""
        columns: dict[str, pl.Series] = {
            SNAPSHOT_INDEX: pl.Series(range(len(self.dates)), dtype=pl.UInt32),
            "snapshot_date": pl.Series(self.dates, dtype=pl.Date),
            "cutoff": self.cutoffs(0),
        }
        for days in WINDOWS:
            columns[f"start_{days}d"] = self.cutoffs(days)
        return pl.LazyFrame(columns)


def _match_snapshots(
    frame: pl.LazyFrame, first: pl.Expr, end: pl.Expr, snapshots: Snapshots
) -> pl.LazyFrame:
    """One row per row of ``frame`` and snapshot index ``k`` in ``[first, end)``.

    The snapshot's boundaries are joined on; rows matching no snapshot disappear.
    """
    return (
        frame.with_columns(first.alias("_first"), end.alias("_end"))
        .filter(pl.col("_first") < pl.col("_end"))
        .with_columns(pl.int_ranges("_first", "_end", dtype=pl.UInt32).alias(SNAPSHOT_INDEX))
        .drop("_first", "_end")
        .explode(SNAPSHOT_INDEX)
        .join(snapshots.table(), on=SNAPSHOT_INDEX, how="inner")
    )


def _in_lookback(frame: pl.LazyFrame, at: str, snapshots: Snapshots) -> pl.LazyFrame:
    """Rows of ``frame`` per snapshot whose lookback period ``[start, cutoff)`` holds ``at``."""
    cutoffs = pl.lit(snapshots.cutoffs(0))
    starts = pl.lit(snapshots.cutoffs(snapshots.lookback_days))
    return _match_snapshots(
        frame,
        cutoffs.search_sorted(pl.col(at), side="right"),
        starts.search_sorted(pl.col(at), side="right"),
        snapshots,
    )


def _window_flags(at: str) -> list[pl.Expr]:
    return [(pl.col(at) >= pl.col(f"start_{days}d")).alias(f"in_{days}d") for days in WINDOWS]


def _reduce(aggregation: Aggregation, column: str) -> pl.Expr:
    values = pl.col(column)
    match aggregation.how:
        case "sum":
            reduced = values.sum()
        case "mean":
            reduced = values.mean()
        case "max":
            reduced = values.max()
        case "min":
            reduced = values.min()
        case _:
            raise ValueError(f"aggregation {aggregation.name!r} has no plain reduction")
    return reduced.alias(aggregation.name)


_KEYS: Final = (SNAPSHOT_INDEX, "customer_id")


def _label_at_extreme(frame: pl.LazyFrame, aggregation: Aggregation) -> pl.LazyFrame:
    """Per (snapshot, customer): the label of the row with the extreme value (ties: label)."""
    if aggregation.label is None:
        raise ValueError(f"aggregation {aggregation.name!r} needs a label column")
    largest = aggregation.how == "label_at_max"
    return (
        frame.select(*_KEYS, aggregation.label, aggregation.value.alias("_value"))
        .filter(pl.col("_value").is_not_null())
        .group_by(*_KEYS)
        .agg(
            pl.col(aggregation.label)
            .sort_by(["_value", aggregation.label], descending=[largest, False])
            .first()
            .alias(aggregation.name)
        )
    )


def _percentile_90(frame: pl.LazyFrame, aggregation: Aggregation) -> pl.LazyFrame:
    """Per (snapshot, customer): the 90th percentile of the values, linearly interpolated.

    Found from one sort instead of a per-group quantile: in each group's sorted values,
    the result lies between the values at ranks ``floor(p)`` and ``floor(p) + 1`` with
    ``p = 0.9 * (n - 1)``.
    """
    value = pl.col("_value")
    first_of_group = pl.any_horizontal(pl.col(k) != pl.col(k).shift(1) for k in _KEYS)
    last_of_group = pl.any_horizontal(pl.col(k) != pl.col(k).shift(-1) for k in _KEYS)
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    position = (pl.col("_end") - pl.col("_start")) * 0.9
    return (
        frame.select(*_KEYS, aggregation.value.alias("_value"))
        .filter(value.is_not_null())
        .sort(*_KEYS, "_value")
        .with_columns(
            _start=pl.when(first_of_group.fill_null(True)).then(row).forward_fill(),
            _end=pl.when(last_of_group.fill_null(True)).then(row).backward_fill(),
            _row=row,
            _next=value.shift(-1),
        )
        .with_columns(_lower=pl.col("_start") + position.floor().cast(pl.Int64))
        .filter(pl.col("_row") == pl.col("_lower"))
        .select(
            *_KEYS,
            (
                value
                + (position - position.floor())
                * (
                    pl.when(pl.col("_row") < pl.col("_end")).then(pl.col("_next")).otherwise(value)
                    - value
                )
            ).alias(aggregation.name),
        )
    )


def _aggregate(frame: pl.LazyFrame, features: Sequence[Feature]) -> pl.LazyFrame:
    """One row per (snapshot, customer) with every aggregation the features need.

    Row values are computed element-wise first, so the group-by only runs plain reductions;
    percentiles and labels of extreme rows come from sorts, joined on.
    """
    aggregations = {a.name: a for f in features for a in f.aggregations}
    plain = [a for a in aggregations.values() if a.how in ("sum", "mean", "max", "min")]
    # Aggregations of the same row value (a mean and a maximum, say) share one column.
    column_of: dict[str, str] = {}
    values: dict[str, pl.Expr] = {}
    for aggregation in plain:
        text = str(aggregation.value)
        if text not in column_of:
            column_of[text] = f"_value{len(column_of)}"
            values[column_of[text]] = aggregation.value
    grouped = (
        frame.select(*_KEYS, *(value.alias(column) for column, value in values.items()))
        .group_by(*_KEYS)
        .agg(_reduce(a, column_of[str(a.value)]) for a in plain)
    )
    for aggregation in aggregations.values():
        if aggregation.how == "p90":
            extra = _percentile_90(frame, aggregation)
        elif aggregation.how in ("label_at_max", "label_at_min"):
            extra = _label_at_extreme(frame, aggregation)
        else:
            continue
        grouped = grouped.join(extra, on=list(_KEYS), how="left")
    return grouped


def _of_source(source: str, features: Sequence[Feature] = (*FEATURES, *HELPERS)) -> list[Feature]:
    return [f for f in features if f.source == source]


# -- per-source snapshot frames ---------------------------------------------------------------


def interaction_snapshot_rows(
    sources: Mapping[str, pl.LazyFrame], snapshots: Snapshots, config: FeatureConfig
) -> pl.LazyFrame:
    """Interactions per snapshot with what was known at its cutoff (see features.registry).

    Every interaction opened in a snapshot's lookback period gives one row for it
    (``in_lookback`` true). A complaint opened before a snapshot's lookback period and still
    open at its cutoff gives one too (``in_lookback`` false, every window flag false), so
    only the features of complaints open at the snapshot see it.
    """
    interactions = source_frame(sources, "interactions")
    last_cutoff = snapshots.cutoffs(0).max()
    first_start = snapshots.cutoffs(snapshots.lookback_days).min()
    repeat_gap = timedelta(days=REPEAT_CONTACT_DAYS)
    earliest = first_start - repeat_gap  # type: ignore[operator]
    opened = pl.col("opened_at")
    same_customer = pl.col("customer_id") == pl.col("customer_id").shift(1)
    public = pl.col("is_public") | pl.col("channel").is_in(list(config.public_channels))
    rows = (
        interactions.filter(opened < last_cutoff)
        .sort("customer_id", "opened_at", "interaction_id")
        .with_columns(
            is_repeat=(same_customer & (opened - opened.shift(1) <= repeat_gap)).fill_null(False),
            is_complaint=pl.col("kind") == COMPLAINT_KIND,
        )
        .with_columns(is_public_complaint=pl.col("is_complaint") & public)
        .select(
            "customer_id",
            "opened_at",
            "channel",
            "is_complaint",
            "is_public_complaint",
            "is_repeat",
            "first_response_at",
            "resolved_at",
            elapsed_hours(pl.col("first_response_at"), opened).alias("_rh"),
            elapsed_hours(pl.col("resolved_at"), opened).alias("_sh"),
            "transfers",
            "reopened",
            "csat",
        )
    )
    in_lookback = _in_lookback(rows.filter(opened >= earliest), "opened_at", snapshots)
    # Snapshots after the complaint's lookback periods ended and before it was resolved.
    cutoffs = pl.lit(snapshots.cutoffs(0))
    starts = pl.lit(snapshots.cutoffs(snapshots.lookback_days))
    open_until = (
        pl.when(pl.col("resolved_at").is_null())
        .then(pl.lit(len(snapshots.dates), dtype=pl.UInt32))
        .otherwise(cutoffs.search_sorted(pl.col("resolved_at"), side="right"))
    )
    still_open = _match_snapshots(
        rows.filter(pl.col("is_complaint")),
        starts.search_sorted(opened, side="right"),
        open_until,
        snapshots,
    )
    answered = (pl.col("first_response_at") < pl.col("cutoff")).fill_null(False)
    resolved = (pl.col("resolved_at") < pl.col("cutoff")).fill_null(False)
    return (
        pl.concat(
            [
                in_lookback.with_columns(in_lookback=pl.lit(True)),
                still_open.with_columns(in_lookback=pl.lit(False)),
            ],
            how="vertical",
        )
        .with_columns(*_window_flags("opened_at"), answered=answered, resolved=resolved)
        .with_columns(
            response_hours=pl.when("answered").then("_rh"),
            resolution_hours=pl.when("resolved").then("_sh"),
            known_transfers=pl.when("resolved").then("transfers"),
            known_csat=pl.when("resolved").then("csat"),
            known_reopened=pl.col("resolved") & pl.col("reopened"),
        )
        .drop("_rh", "_sh", "transfers", "csat", "reopened", "first_response_at", "resolved_at")
    )


_TIME_KEY_BITS: Final = 34
"""Low bits of an activity lookup key: ``2 * seconds + fraction`` since the first boundary
(room for 272 years); the high bits hold the customer's code (up to 2**29 customers)."""


def _time_key(instant: pl.Expr, base: datetime) -> pl.Expr:
    """Twice the whole seconds since ``base``, plus 1 when there is a fraction of a second.

    Orders instants as they are ordered, and every instant strictly before a whole-second
    boundary gets a key strictly below the boundary's (even) key.
    """
    micros = (instant - pl.lit(base, dtype=_UTC_US)).dt.total_microseconds()
    return micros // 1_000_000 * 2 + (micros % 1_000_000 != 0).cast(pl.Int64)


_FIXED_POINT_SCALE: Final = 1_000_000
"""Activity running totals count millionths: up to 1.7e38 fits a 128-bit total, room for
10^17 rows of the largest plausible amount (1e15, i.e. 1e21 millionths)."""


def _fixed_point(value: pl.Expr) -> pl.Expr:
    """``value`` in millionths as a 128-bit integer (a strict cast: NaN or overflow raise)."""
    return (value.cast(pl.Float64) * _FIXED_POINT_SCALE).round().cast(pl.Int128)


def _lookup_key(code: pl.Expr, instant: pl.Expr, base: datetime) -> pl.Expr:
    return code.cast(pl.Int64) * (1 << _TIME_KEY_BITS) + _time_key(instant, base)


def activity_aggregates(
    sources: Mapping[str, pl.LazyFrame],
    snapshots: Snapshots,
    event_types: Sequence[str],
    aggregations: Sequence[Aggregation],
    keys: pl.LazyFrame,
) -> pl.LazyFrame:
    """Activity aggregations for every (``_snapshot``, ``customer_id``) of ``keys``.

    Activity is the largest table, so it is never expanded per snapshot: its rows (of every
    event type, in the lookback of some snapshot, of customers in ``keys``) are
    sorted once by customer and time and every summed value is accumulated. A window sum
    is the difference of the running totals just before the window's two boundaries, both
    found with one ``join_asof`` per boundary; ``last`` is the instant, to the second, of the
    row found just before the cutoff. Running totals of values are kept in fixed point
    (millionths, as 128-bit integers), so the differences are exact: counts are exact,
    value sums are exact to a millionth, and no customer's values, however large, blur
    another's sums (Float64 totals would: after a customer with a value of 1e17, the next
    customers' value sums read 0). Values must be finite and within
    ±:data:`warehouse.validate.MAX_PLAUSIBLE_AMOUNT`, as validation leaves them; others stop
    the build with Polars' conversion error.
    """
    lookback_start = snapshots.cutoffs(snapshots.lookback_days)
    base: datetime = lookback_start.min()  # type: ignore[assignment]
    distinct = {a.name: a for a in aggregations}.values()
    sums = [a for a in distinct if a.how == "window_sum" and a.window is not None]
    lasts = [a for a in distinct if a.how == "last"]
    total_of: dict[str, str] = {}
    totals: dict[str, pl.Expr] = {}
    for aggregation in sums:
        column = total_of.setdefault(str(aggregation.value), f"_total{len(total_of)}")
        totals[column] = aggregation.value
    codes = keys.select("customer_id").unique().sort("customer_id").with_row_index("_code")
    occurred = pl.col("occurred_at")
    rows = (
        source_frame(sources, "activity")
        .filter((occurred >= base) & (occurred < snapshots.cutoffs(0).max()))
        .with_columns(
            event_type_index=pl.col("event_type")
            .cast(pl.Enum(list(event_types)), strict=False)
            .to_physical()
        )
        .join(codes, on="customer_id", how="inner")
        .select(
            _lookup_key(pl.col("_code"), occurred, base).alias("_key"),
            "event_type_index",
            "value",
        )
        .sort("_key")
        .with_columns(value.alias(column) for column, value in totals.items())
    )
    # Counts are integers already; summed values go to fixed point (see the docstring).
    schema = rows.collect_schema()
    fractional = [column for column in totals if schema[column].is_float()]
    scale = {column: _FIXED_POINT_SCALE if column in fractional else 1 for column in totals}
    running = rows.with_columns(
        _fixed_point(pl.col(column)).alias(column) for column in fractional
    ).select(
        "_key",
        pl.col("_key").alias("_found_key"),
        *(pl.col(column).cum_sum() for column in totals),
    )
    # Sorted by customer code, then snapshot: the keys of every boundary are sorted too.
    lookups = keys.join(codes, on="customer_id").sort("_code", SNAPSHOT_INDEX)
    offsets = {day for a in sums if a.window is not None for day in a.window}
    if lasts:
        offsets.add(0)
    parts = [lookups.select(SNAPSHOT_INDEX, "customer_id", "_code")]
    for offset in sorted(offsets):
        wanted = sorted(
            {total_of[str(a.value)] for a in sums if a.window is not None and offset in a.window}
        )
        found = [*wanted, "_found_key"] if offset == 0 and lasts else wanted
        boundary = pl.lit(snapshots.cutoffs(offset)).gather(pl.col(SNAPSHOT_INDEX))
        looked_up = (
            lookups.select(_lookup_key(pl.col("_code"), boundary, base).alias("_key"))
            .set_sorted("_key")
            .join_asof(
                running.select("_key", *found),
                on="_key",
                strategy="backward",
                allow_exact_matches=False,
            )
        )
        parts.append(
            looked_up.select(
                *(pl.col(c).fill_null(0).alias(f"{c}@{offset}") for c in wanted),
                *(pl.col(c) for c in found if c not in wanted),
            )
        )
    combined = pl.concat(parts, how="horizontal")
    # The row found just before the cutoff is the customer's last one when its code matches;
    # its instant, from the key, is exact to the second.
    found_code = pl.col("_found_key") // (1 << _TIME_KEY_BITS)
    found_second = (pl.col("_found_key") % (1 << _TIME_KEY_BITS)) // 2
    found_at = pl.lit(base, dtype=_UTC_US) + pl.duration(seconds=found_second)
    in_lookback = found_at >= pl.lit(lookback_start).gather(pl.col(SNAPSHOT_INDEX))
    window_sums = [
        (
            (
                pl.col(f"{total_of[str(a.value)]}@{a.window[1]}")
                - pl.col(f"{total_of[str(a.value)]}@{a.window[0]}")
            ).cast(pl.Float64)
            / scale[total_of[str(a.value)]]
        ).alias(a.name)
        for a in sums
        if a.window is not None
    ]
    latest = [
        pl.when((found_code == pl.col("_code")) & in_lookback).then(found_at).alias(a.name)
        for a in lasts
    ]
    return combined.select(SNAPSHOT_INDEX, "customer_id", *window_sums, *latest)


def subscription_snapshot_rows(
    sources: Mapping[str, pl.LazyFrame], snapshots: Snapshots
) -> pl.LazyFrame:
    """Subscriptions started in each snapshot's lookback period, flagged when a downgrade.

    A downgrade is a subscription whose MRR is below that of the customer's previous
    subscription: the latest one before it (by start; ties by MRR, then plan) of those
    still running at some point of the snapshot's lookback period. Subscriptions that
    ended before the lookback are not read for scoring, so they never count, and which
    one is "previous" does not depend on how much older history was read.
    """
    order = ["customer_id", "started_at", "mrr", "plan"]
    ordered = (
        source_frame(sources, "subscriptions")
        .filter(pl.col("started_at") < snapshots.cutoffs(0).max())
        .sort(order, nulls_last=True)
        .with_columns(_order=pl.int_range(pl.len(), dtype=pl.UInt32).over("customer_id"))
    )
    started = _in_lookback(
        ordered.select("customer_id", "started_at", "mrr", "_order"), "started_at", snapshots
    )
    keys = [SNAPSHOT_INDEX, "customer_id", "_order"]
    lookback_start = pl.lit(snapshots.cutoffs(snapshots.lookback_days)).gather(
        pl.col(SNAPSHOT_INDEX)
    )
    previous = (
        started.select(keys)
        .join(
            ordered.select(
                "customer_id",
                pl.col("_order").alias("_previous_order"),
                pl.col("mrr").alias("_previous_mrr"),
                pl.col("ended_at").alias("_previous_ended_at"),
            ),
            on="customer_id",
        )
        .filter(
            (pl.col("_previous_order") < pl.col("_order"))
            & (
                pl.col("_previous_ended_at").is_null()
                | (pl.col("_previous_ended_at") >= lookback_start)
            )
        )
        .group_by(keys)
        .agg(pl.col("_previous_mrr").sort_by("_previous_order").last())
    )
    return (
        started.join(previous, on=keys, how="left")
        .with_columns(*_window_flags("started_at"))
        .with_columns(is_downgrade=(pl.col("mrr") < pl.col("_previous_mrr")).fill_null(False))
        .drop("_order", "_previous_mrr", "mrr")
    )


def covering_subscriptions(
    sources: Mapping[str, pl.LazyFrame], snapshots: Snapshots
) -> pl.LazyFrame:
    """Per snapshot and customer with a subscription covering its cutoff: MRR and plan.

    A subscription covers a snapshot when it covered the last instant before the cutoff:
    ``started_at < cutoff <= ended_at`` (``ended_at`` null: still running). What starts at
    the cutoff has not started yet and what ends at it had not ended before it, so nothing
    dated at or after the cutoff decides. ``covering_mrr`` sums the covering subscriptions'
    MRR (null when none is known); ``covering_plan`` is the plan of the latest started one
    (ties: higher MRR, then plan).
    """
    subscriptions = source_frame(sources, "subscriptions")
    cutoffs = pl.lit(snapshots.cutoffs(0))
    n = len(snapshots.dates)
    end = (
        pl.when(pl.col("ended_at").is_null())
        .then(pl.lit(n, dtype=pl.UInt32))
        .otherwise(cutoffs.search_sorted(pl.col("ended_at"), side="right"))
    )
    covering = _match_snapshots(
        subscriptions, cutoffs.search_sorted(pl.col("started_at"), side="right"), end, snapshots
    )
    latest_first = [pl.col("started_at"), pl.col("mrr"), pl.col("plan")]
    return covering.group_by(SNAPSHOT_INDEX, "customer_id").agg(
        covering_mrr=pl.when(pl.col("mrr").count() > 0).then(pl.col("mrr").sum()),
        covering_plan=pl.col("plan")
        .sort_by(latest_first, descending=True, nulls_last=True)
        .first(),
    )


def customers_with_activity(
    sources: Mapping[str, pl.LazyFrame],
    snapshots: Snapshots,
    starts: pl.Series,
    ends: pl.Series,
) -> pl.LazyFrame:
    """``_snapshot`` index and customer for customers with any activity in ``[starts, ends)``.

    ``starts`` and ``ends`` hold one instant per snapshot, both non-decreasing. Activity of
    every event type counts.
    """
    boundaries = pl.concat([starts, ends]).unique().sort()
    stretches = (
        source_frame(sources, "activity")
        .with_columns(
            _stretch=pl.lit(boundaries).search_sorted(pl.col("occurred_at"), side="right")
        )
        .filter((pl.col("_stretch") > 0) & (pl.col("_stretch") < len(boundaries)))
        .group_by("customer_id", "_stretch")
        .agg(last_at=pl.col("occurred_at").max())
    )
    matched = _match_snapshots(
        stretches,
        pl.lit(ends).search_sorted(pl.col("last_at"), side="right"),
        pl.lit(starts).search_sorted(pl.col("last_at"), side="right"),
        snapshots,
    )
    return matched.select(SNAPSHOT_INDEX, "customer_id").unique()


def population_index(
    sources: Mapping[str, pl.LazyFrame], snapshots: Snapshots, config: FeatureConfig
) -> pl.LazyFrame:
    """``_snapshot`` index and customer of the population (see :func:`population`)."""
    if config.label_kind == "subscription":
        return covering_subscriptions(sources, snapshots).select(SNAPSHOT_INDEX, "customer_id")
    return customers_with_activity(
        sources, snapshots, snapshots.cutoffs(config.inactivity_days), snapshots.cutoffs(0)
    )


def population(
    sources: Mapping[str, pl.LazyFrame], snapshots: Sequence[date], config: FeatureConfig
) -> pl.LazyFrame:
    """``snapshot_date`` (Date), ``customer_id`` (Int64) of the customers active at each date.

    Active means a subscription covers the snapshot (see :func:`covering_subscriptions`;
    ``label_kind="subscription"``) or there was activity in the ``inactivity_days`` before
    its cutoff (``"inactivity"``).
    Sorted by snapshot date and customer.
    """
    known = Snapshots.of(snapshots, config)
    return (
        population_index(sources, known, config)
        .join(known.table().select(SNAPSHOT_INDEX, "snapshot_date"), on=SNAPSHOT_INDEX)
        .select("snapshot_date", "customer_id")
        .sort("snapshot_date", "customer_id")
    )


# -- event types and the feature frame --------------------------------------------------------


def discover_event_types(activity: pl.LazyFrame, cap: int) -> list[str]:
    """The ``cap`` most frequent activity event types (ties by name), to store with a model.

    A type whose column name part (:func:`features.registry.event_type_slug`) equals that of
    a more frequent type is skipped, so the result always yields distinct columns.
    """
    if cap <= 0:
        return []
    counts = (
        activity.group_by("event_type")
        .agg(pl.len().alias("rows"))
        .sort(["rows", "event_type"], descending=[True, False])
        .collect()
    )
    chosen: list[str] = []
    slugs: set[str] = set()
    for event_type in counts["event_type"]:
        if event_type is None:
            continue
        slug = event_type_slug(event_type)
        if slug in slugs:
            continue
        slugs.add(slug)
        chosen.append(event_type)
        if len(chosen) == cap:
            break
    return chosen


def build_features(
    sources: Mapping[str, pl.LazyFrame],
    snapshots: Sequence[date],
    config: FeatureConfig,
    event_types: Sequence[str],
) -> pl.LazyFrame:
    """Features for every customer of the population at every snapshot date, lazily.

    One row per (``snapshot_date``, ``customer_id``) of :func:`population`, sorted by both;
    columns ``snapshot_date``, ``customer_id``, then
    :func:`features.registry.feature_columns` ``(event_types)`` in that order, then the
    helper columns of :data:`features.registry.HELPERS` (for reason sentences, not model
    features). Categorical features are strings, the rest Float64. Activity of event types
    not in ``event_types`` gets no features of its own but counts in the activity totals,
    the trend and the days since the last activity.
    """
    known = Snapshots.of(snapshots, config)
    event_features = event_type_features(event_types)
    keys = [SNAPSHOT_INDEX, "customer_id"]
    covering = covering_subscriptions(sources, known)
    if config.label_kind == "subscription":
        population_keys = covering.select(keys)
        base = covering
    else:
        population_keys = population_index(sources, known, config)
        base = population_keys.join(covering, on=keys, how="left")

    interactions = _aggregate(
        interaction_snapshot_rows(sources, known, config), _of_source("interactions")
    )
    activity_features = _of_source("activity", (*FEATURES, *HELPERS, *event_features))
    activity = activity_aggregates(
        sources,
        known,
        event_types,
        [a for f in activity_features for a in f.aggregations],
        population_keys,
    )
    downgrades = _aggregate(subscription_snapshot_rows(sources, known), _of_source("subscriptions"))
    customers = source_frame(sources, "customers").select(
        "customer_id", "signup_at", "segment", "monthly_value"
    )
    frame = (
        base.join(
            known.table().select(SNAPSHOT_INDEX, "snapshot_date", "cutoff"), on=SNAPSHOT_INDEX
        )
        .join(customers, on="customer_id", how="left")
        .join(downgrades, on=keys, how="left")
        .join(activity, on=keys, how="left")
        .join(interactions, on=keys, how="left")
    )
    schema = feature_schema(event_types)
    columns: list[pl.Expr] = [pl.col("snapshot_date"), pl.col("customer_id")]
    for feature in (*FEATURES, *event_features, *HELPERS):
        if feature.expr is None:
            raise ValueError(f"feature {feature.name!r} has no expression")
        value = feature.expr
        if feature.default is not None:
            value = value.fill_null(feature.default)
        columns.append(value.cast(schema[feature.name]).alias(feature.name))
    return frame.select(columns).sort("snapshot_date", "customer_id")
