"""Churn labels for snapshot dates.

For snapshot date ``d`` and horizon ``H`` (``config.horizon_days``), with ``c(x)`` the cutoff
instant of date ``x`` (:func:`features.build.snapshot_cutoff`):

* ``subscription`` kind: the population is the customers with a subscription covering
  ``c(d)``; ``churned`` when no subscription covers ``c(d + H)``. A customer whose
  subscription lapses inside the horizon but who is subscribed again at ``c(d + H)`` has
  not churned; one who is between two subscriptions at ``c(d + H)`` has.
* ``inactivity`` kind: the population is the customers with activity (any event type) in
  ``[c(d - N), c(d))``, ``N = config.inactivity_days``; ``churned`` when they have no
  activity in ``[c(d), c(d + H))``, the ``H`` days from the snapshot instant on.

A snapshot has labels only once its horizon is complete: ``c(d + H) <= known_until``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Final

import polars as pl

from features.build import (
    SNAPSHOT_INDEX,
    FeatureConfig,
    Snapshots,
    covering_subscriptions,
    customers_with_activity,
    population_index,
    snapshot_cutoff,
)

LABEL_SCHEMA: Final = pl.Schema(
    {"snapshot_date": pl.Date(), "customer_id": pl.Int64(), "churned": pl.Boolean()}
)
"""Columns of the frame :func:`build_labels` returns."""


def horizon_end(d: date, config: FeatureConfig) -> datetime:
    """The instant (UTC) a snapshot's horizon ends: the cutoff of ``d + horizon_days``."""
    return snapshot_cutoff(d + timedelta(days=config.horizon_days), config.timezone)


def labelled_snapshots(
    snapshots: Sequence[date], config: FeatureConfig, *, known_until: datetime
) -> list[date]:
    """The snapshot dates (sorted, unique) whose horizon ends at or before ``known_until``."""
    if known_until.tzinfo is None:
        raise ValueError(f"known_until must be time-zone aware, got {known_until!r}")
    return sorted(d for d in set(snapshots) if horizon_end(d, config) <= known_until)


def build_labels(
    sources: Mapping[str, pl.LazyFrame],
    snapshots: Sequence[date],
    config: FeatureConfig,
    *,
    known_until: datetime,
) -> pl.LazyFrame:
    """``snapshot_date``, ``customer_id``, ``churned`` for the population of each snapshot.

    Snapshots whose horizon ends after ``known_until`` (usually the extraction time) are
    left out entirely. Sorted by snapshot date and customer.
    """
    complete = labelled_snapshots(snapshots, config, known_until=known_until)
    if not complete:
        return pl.LazyFrame(schema=LABEL_SCHEMA)
    known = Snapshots.of(complete, config)
    keys = [SNAPSHOT_INDEX, "customer_id"]
    at_snapshot = population_index(sources, known, config)
    if config.label_kind == "subscription":
        # Distinct dates shifted by H stay distinct and in order: indexes line up.
        later = Snapshots.of([d + timedelta(days=config.horizon_days) for d in complete], config)
        staying = covering_subscriptions(sources, later).select(keys)
    else:
        staying = customers_with_activity(
            sources, known, known.cutoffs(0), known.cutoffs(-config.horizon_days)
        )
    return (
        at_snapshot.join(staying.with_columns(pl.lit(False).alias("churned")), on=keys, how="left")
        .join(known.table().select(SNAPSHOT_INDEX, "snapshot_date"), on=SNAPSHOT_INDEX)
        .select(
            "snapshot_date",
            pl.col("customer_id").cast(pl.Int64),
            pl.col("churned").fill_null(True),
        )
        .sort("snapshot_date", "customer_id")
    )
