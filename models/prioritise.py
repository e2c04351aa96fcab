"""Who the retention team calls first: value at risk, ranking, capacity and cool-down.

Every scored customer gets a rank (1..n, no gaps, no ties) and a ``listed`` flag, so
analysts can see the whole distribution while the team works the listed top.

Rules (documented in docs/output.md):

* ``value_at_risk = churn_probability * customer_value * horizon_days / 30.4375``, where
  ``customer_value`` is the monthly value (null counts as 0) and 30.4375 is the mean
  length of a month in days.
* Ranking is by ``value_at_risk`` (default) or by ``churn_probability``, descending; ties
  are broken by the other of the two, then by ``customer_id`` ascending, so the ranking is
  deterministic.
* A customer contacted in the cool-down window (``[cutoff - cooldown_days, cutoff)``, from
  ``retention_contacts``) is ``cooled_down`` and never listed.
* ``listed`` walks the ranking from the top and takes every customer who is not cooled
  down, while their segment is below its cap (``segment_capacity``; segments without a
  cap are unlimited) and the list is below ``capacity``.
* ``priority`` says how much more likely than usual a customer is to leave, for every
  scored customer, listed or not: ``high`` when the churn probability is at least
  ``high_lift`` (3) times the mean churn probability of the day's scored customers,
  ``medium`` from ``medium_lift`` (1.5) times, ``low`` below. A listed customer may be
  ``low``: listed for the value at stake, not for the likelihood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import polars as pl

from features.build import snapshot_cutoff
from warehouse.settings import Settings

DAYS_PER_MONTH = 30.4375
"""Mean length of a month in days (365.25 / 12): converts a monthly value to the horizon."""

RankBy = Literal["value_at_risk", "probability"]

PRIORITIES = ("high", "medium", "low")

SCORED_COLUMNS = ("customer_id", "churn_probability", "segment", "customer_value")

PRIORITISED_SCHEMA = pl.Schema(
    {
        "customer_id": pl.Int64(),
        "rank": pl.Int64(),
        "listed": pl.Boolean(),
        "churn_probability": pl.Float64(),
        "value_at_risk": pl.Float64(),
        "customer_value": pl.Float64(),
        "priority": pl.String(),
        "segment": pl.String(),
        "cooled_down": pl.Boolean(),
    }
)
"""Columns of :attr:`PrioritisedList.frame`, in this order."""


@dataclass(frozen=True)
class PrioritySettings:
    """How the day's list is cut: capacity, per-segment caps, ranking key and cool-down."""

    capacity: int = 500
    segment_capacity: Mapping[str, int] = field(default_factory=dict)
    rank_by: RankBy = "value_at_risk"
    cooldown_days: int = 14
    horizon_days: int = 30
    high_lift: float = 3.0
    medium_lift: float = 1.5

    def __post_init__(self) -> None:
        if self.capacity < 0:
            raise ValueError(f"list capacity must be >= 0, got {self.capacity}")
        for segment, cap in self.segment_capacity.items():
            if cap < 0:
                raise ValueError(f"segment_capacity[{segment!r}] must be >= 0, got {cap}")
        if self.rank_by not in ("value_at_risk", "probability"):
            raise ValueError(
                f"rank_by must be 'value_at_risk' or 'probability', got {self.rank_by!r}"
            )
        if self.cooldown_days < 0:
            raise ValueError(f"cooldown_days must be >= 0, got {self.cooldown_days}")
        if self.horizon_days < 1:
            raise ValueError(f"horizon_days must be >= 1, got {self.horizon_days}")
        if not 0.0 < self.medium_lift <= self.high_lift:
            raise ValueError(
                "priority lifts must satisfy 0 < medium_lift <= high_lift, got "
                f"medium_lift={self.medium_lift}, high_lift={self.high_lift}"
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> PrioritySettings:
        """The prioritisation part of the job's settings."""
        return cls(
            capacity=settings.list_capacity,
            segment_capacity=dict(settings.segment_capacity),
            rank_by=settings.rank_by,
            cooldown_days=settings.cooldown_days,
            horizon_days=settings.horizon_days,
            high_lift=settings.priority_high_lift,
            medium_lift=settings.priority_medium_lift,
        )


@dataclass(frozen=True)
class PrioritisedList:
    """Every scored customer with rank, flags and priority, plus the day's counts."""

    frame: pl.DataFrame
    n_scored: int
    n_listed: int
    n_cooled_down: int
    warnings: list[str] = field(default_factory=list)
    """Configuration that had no effect tonight (a segment cap matching no segment)."""

    @property
    def listed_customer_ids(self) -> pl.Series:
        """Customer ids of the listed customers, in rank order."""
        return self.frame.filter(pl.col("listed")).sort("rank")["customer_id"]


def as_of_cutoff(as_of: date, timezone: str) -> datetime:
    """The instant a scoring day starts: the start of ``as_of`` in ``timezone``, in UTC.

    The same instant the features for ``as_of`` are cut at
    (:func:`features.build.snapshot_cutoff`): contacts strictly before it count.
    """
    return snapshot_cutoff(as_of, timezone)


def cooled_down_customers(
    contacts: pl.LazyFrame | pl.DataFrame,
    as_of_cutoff: datetime,
    cooldown_days: int,
    *,
    timezone: str,
) -> pl.DataFrame:
    """Customers contacted in the ``cooldown_days`` local days before ``as_of_cutoff``.

    The window is ``[start of (as_of - cooldown_days), start of as_of)`` in ``timezone``:
    local midnights, so a daylight-saving change inside it moves neither end.
    ``contacts`` has the ``retention_contacts`` columns ``customer_id`` and
    ``contacted_at`` (a time-zone-aware datetime). Returns one row per customer
    (column ``customer_id``, sorted). ``cooldown_days = 0`` means no cool-down.
    """
    if as_of_cutoff.tzinfo is None:
        raise ValueError("as_of_cutoff must be time-zone aware (UTC)")
    if cooldown_days < 0:
        raise ValueError(f"cooldown_days must be >= 0, got {cooldown_days}")
    lazy = contacts.lazy()
    schema = lazy.collect_schema()
    missing = [c for c in ("customer_id", "contacted_at") if c not in schema]
    if missing:
        raise ValueError(f"retention_contacts frame lacks column(s) {', '.join(missing)}")
    contacted_at = schema["contacted_at"]
    if not isinstance(contacted_at, pl.Datetime) or contacted_at.time_zone is None:
        raise ValueError(
            "retention_contacts.contacted_at must be a time-zone-aware datetime, "
            f"got {contacted_at}"
        )
    cutoff = as_of_cutoff.astimezone(ZoneInfo("UTC"))
    as_of = cutoff.astimezone(ZoneInfo(timezone)).date()
    start = snapshot_cutoff(as_of - timedelta(days=cooldown_days), timezone)
    in_window = pl.col("contacted_at").dt.convert_time_zone("UTC")
    return (
        lazy.filter(in_window.is_between(pl.lit(start), pl.lit(cutoff), closed="left"))
        .select(pl.col("customer_id").cast(pl.Int64))
        .unique()
        .sort("customer_id")
        .collect()
    )


def _check_scored(scored: pl.DataFrame) -> None:
    missing = [c for c in SCORED_COLUMNS if c not in scored.columns]
    if missing:
        raise ValueError(f"scored customers lack column(s) {', '.join(missing)}")
    n_null_ids = scored["customer_id"].null_count()
    if n_null_ids:
        raise ValueError(f"scored customers: customer_id is null in {n_null_ids} row(s)")
    n_duplicates = scored.height - scored["customer_id"].n_unique()
    if n_duplicates:
        raise ValueError(f"scored customers: customer_id repeats in {n_duplicates} row(s)")
    probability = scored["churn_probability"]
    n_bad = int(probability.is_null().sum()) + int((~probability.is_between(0.0, 1.0)).sum())
    if n_bad:
        raise ValueError(
            f"scored customers: churn_probability is null or outside [0, 1] in {n_bad} row(s)"
        )


def prioritise(
    scored: pl.DataFrame, cooled_down: pl.DataFrame, config: PrioritySettings
) -> PrioritisedList:
    """Rank every scored customer and mark the day's list.

    ``scored`` has ``customer_id``, ``churn_probability``, ``segment`` and
    ``customer_value`` (monthly, may be null); ``cooled_down`` has ``customer_id``.
    The returned frame has the columns of :data:`PRIORITISED_SCHEMA`, sorted by rank.
    """
    _check_scored(scored)
    months = config.horizon_days / DAYS_PER_MONTH
    caps = dict(config.segment_capacity)
    primary, secondary = (
        ("value_at_risk", "churn_probability")
        if config.rank_by == "value_at_risk"
        else ("churn_probability", "value_at_risk")
    )
    cooled_ids = cooled_down.get_column("customer_id").cast(pl.Int64).unique()

    ranked = (
        scored.lazy()
        .select(
            pl.col("customer_id").cast(pl.Int64),
            pl.col("churn_probability").cast(pl.Float64),
            pl.col("segment").cast(pl.String),
            pl.col("customer_value").cast(pl.Float64).fill_nan(None).fill_null(0.0),
        )
        .with_columns(
            value_at_risk=pl.col("churn_probability") * pl.col("customer_value") * months,
            cooled_down=pl.col("customer_id").is_in(cooled_ids.implode()),
        )
        .sort(
            [primary, secondary, "customer_id"],
            descending=[True, True, False],
            nulls_last=True,
        )
        .with_row_index("rank", offset=1)
        .with_columns(pl.col("rank").cast(pl.Int64))
    )

    eligible = ~pl.col("cooled_down")
    # Position of each eligible customer within their segment, in rank order.
    segment_position = (
        pl.when(eligible).then(eligible.cast(pl.Int64).cum_sum().over("segment")).otherwise(None)
    )
    segment_cap = (
        pl.col("segment").replace_strict(caps, default=None, return_dtype=pl.Int64)
        if caps
        else pl.lit(None, dtype=pl.Int64)
    )
    within_segment = eligible & (segment_cap.is_null() | (segment_position <= segment_cap))
    list_position = within_segment.cast(pl.Int64).cum_sum()
    listed = within_segment & (list_position <= config.capacity)

    mean_probability = pl.col("churn_probability").mean()
    frame = (
        ranked.with_columns(listed=listed)
        .with_columns(
            priority=pl.when(pl.col("churn_probability") >= config.high_lift * mean_probability)
            .then(pl.lit("high"))
            .when(pl.col("churn_probability") >= config.medium_lift * mean_probability)
            .then(pl.lit("medium"))
            .otherwise(pl.lit("low"))
        )
        .select(PRIORITISED_SCHEMA.names())
        .cast(PRIORITISED_SCHEMA)
        .collect()
    )
    return PrioritisedList(
        frame=frame,
        n_scored=frame.height,
        n_listed=int(frame["listed"].sum()),
        n_cooled_down=int(frame["cooled_down"].sum()),
        warnings=_unmatched_caps(caps, frame["segment"]),
    )


def _unmatched_caps(caps: Mapping[str, int], segments: pl.Series) -> list[str]:
    """One warning per segment cap whose segment nobody scored tonight belongs to."""
    present = set(segments.drop_nulls().unique().to_list())
    missing = sorted(segment for segment in caps if segment not in present)
    if not missing:
        return []
    known = ", ".join(repr(s) for s in sorted(present)[:10]) or "none"
    return [
        f"segment cap {segment!r} matches no scored customer (segments are compared exactly; "
        f"tonight's segments: {known})"
        for segment in missing
    ]
