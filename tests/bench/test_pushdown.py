"""The warehouse-side activity aggregate computes what the activity features compute."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import polars as pl
import pytest

from bench.pushdown import activity_aggregate_query, measure_pushdown
from features.build import FeatureConfig, build_features, snapshot_cutoff
from features.registry import event_type_slug
from models.nightly import extract_sources, scoring_window, validate_sources
from warehouse.db import engine_for
from warehouse.demo import generate_demo, load_demo
from warehouse.schema import build_warehouse
from warehouse.settings import Settings

pytestmark = pytest.mark.postgres

END = date(2026, 6, 1)
AS_OF = date(2026, 5, 20)  # inside the history, so rows after the snapshot exist and must not count
EVENT_TYPES = ["login", "order", "refund"]


def test_the_aggregate_equals_the_activity_features_and_both_reads_are_measured(
    pg_url: str, make_settings: Callable[..., Settings], sqlite_url: str
) -> None:
    settings = make_settings(pg_url)
    engine = engine_for(settings)
    wh = build_warehouse(settings)
    try:
        load_demo(engine, wh, generate_demo(400, 130, seed=3, end=END))
        window = scoring_window(settings, AS_OF)
        sources, _report = validate_sources(settings, extract_sources(engine, wh, window), window)
        config = FeatureConfig.from_settings(settings)
        features = build_features(sources.lazy(), [AS_OF], config, EVENT_TYPES).collect()
        query = activity_aggregate_query(
            wh,
            as_of=AS_OF,
            timezone=settings.timezone,
            lookback_days=config.lookback_days,
            event_types=EVENT_TYPES,
        )
        with engine.connect() as conn:
            aggregate = pl.DataFrame(
                [dict(row) for row in conn.execute(query).mappings()], infer_schema_length=None
            )
    finally:
        engine.dispose()

    cutoff = snapshot_cutoff(AS_OF, settings.timezone)
    joined = features.join(aggregate, on="customer_id", how="left")
    assert joined.height == features.height > 100
    # Customers with activity and without it are both in the comparison.
    assert 0 < joined["events_90d"].null_count() < joined.height
    expected_columns = {f"activity_events_{d}d": f"events_{d}d" for d in (7, 30, 90)}
    for index, event_type in enumerate(EVENT_TYPES):
        slug = event_type_slug(event_type)
        for suffix in ("events_30d", "events_90d", "value_90d"):
            expected_columns[f"activity_{slug}_{suffix}"] = f"type{index}_{suffix}"
    for feature, column in expected_columns.items():
        from_sql = joined[column].fill_null(0).cast(pl.Float64)
        assert (joined[feature].cast(pl.Float64) - from_sql).abs().lt(1e-9).all(), feature
    assert joined["type0_events_30d"].sum() > 0
    last_at = pl.col("last_activity_at").dt.convert_time_zone("UTC")
    days_since = (pl.lit(cutoff) - last_at).dt.total_seconds(fractional=True) / 86_400
    check = joined.select(
        pl.col("days_since_last_activity"), days_since.alias("from_sql"), "events_prior_60d"
    )
    assert check["days_since_last_activity"].is_null().eq(check["from_sql"].is_null()).all()
    # The feature counts whole seconds.
    assert ((check["days_since_last_activity"] - check["from_sql"]).abs() < 1 / 86_400).all()
    trend = joined["events_30d"].cast(pl.Float64) / (joined["events_prior_60d"] * 0.5)
    has_prior = joined["events_prior_60d"].fill_null(0) > 0
    assert has_prior.any()
    assert (joined["activity_trend_30d"] - trend).abs().lt(1e-9).filter(has_prior).all()

    measured = measure_pushdown(pg_url, AS_OF, repeats=1)
    assert measured["event_types"]  # none given, no champion: the most frequent types
    reads, aggregated = measured["read_rows"], measured["aggregate_in_warehouse"]
    # One row per customer with activity in the lookback, whatever the event types.
    assert aggregated["rows"] == aggregate.height
    assert reads["rows"] > aggregated["rows"] > 0
    for part in (reads, aggregated):
        assert part["seconds"] > 0 and part["server_seconds"] > 0

    with pytest.raises(ValueError, match="runs on PostgreSQL; this warehouse is sqlite"):
        measure_pushdown(sqlite_url, AS_OF, repeats=1)
