"""The benchmark's pandas implementation computes the same features as the Polars build."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date

import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bench.pandas_features import build_features_pandas
from features.build import FeatureConfig, build_features, discover_event_types
from features.registry import feature_schema
from tests.features.frames import make_sources
from tests.features.test_build import ACTIVITY, CUSTOMERS, INTERACTIONS, SUBSCRIPTIONS, event


def assert_same_features(
    sources: Mapping[str, pl.LazyFrame],
    snapshots: Sequence[date],
    config: FeatureConfig,
    event_types: Sequence[str],
) -> pl.DataFrame:
    expected = build_features(sources, snapshots, config, event_types).collect()
    frames = {name: frame.collect().to_pandas() for name, frame in sources.items()}
    computed = build_features_pandas(frames, snapshots, config, event_types)
    schema = feature_schema(event_types)
    assert list(computed.columns) == list(schema)
    actual = pl.from_pandas(computed).with_columns(
        pl.col(c).cast(dtype) for c, dtype in schema.items()
    )
    assert_frame_equal(actual, expected, rel_tol=1e-9, abs_tol=1e-9)
    return expected


@pytest.mark.parametrize("kind", ["subscription", "inactivity"])
def test_pandas_matches_polars_on_literal_frames(kind: str) -> None:
    extra = [event("2026-02-25", "login", customer_id=c) for c in (2, 3)]
    sources = make_sources(
        customers=CUSTOMERS,
        subscriptions=SUBSCRIPTIONS,
        interactions=INTERACTIONS,
        activity=[*ACTIVITY, *extra],
    )
    config = FeatureConfig(label_kind=kind)  # type: ignore[arg-type]
    snapshots = [date(2026, 3, 1), date(2026, 3, 2), date(2026, 1, 20), date(2025, 12, 15)]
    built = assert_same_features(sources, snapshots, config, ["login", "order", "refund"])
    assert built.height > 5


def test_pandas_matches_polars_on_a_demo_sample() -> None:
    demo = pytest.importorskip("warehouse.demo")
    frames = demo.generate_demo(300, 200, 7, date(2026, 6, 1))
    sources = {name: frame.lazy() for name, frame in frames.items()}
    event_types = discover_event_types(sources["activity"], 12)
    config = FeatureConfig(timezone="Europe/London")
    snapshots = [date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1), date(2026, 6, 1)]
    built = assert_same_features(sources, snapshots, config, event_types)
    assert built.height > 600
    assert built["contacts_90d"].sum() > 0
    assert built["activity_events_30d"].sum() > 0


def test_pandas_inputs_are_plain_frames() -> None:
    sources = make_sources(subscriptions=SUBSCRIPTIONS)
    frames = {name: frame.collect().to_pandas() for name, frame in sources.items()}
    assert all(isinstance(f, pd.DataFrame) for f in frames.values())
    result = build_features_pandas(frames, [date(2026, 3, 1)], FeatureConfig(), [])
    assert result["customer_id"].tolist() == [1, 2, 3, 4, 5]
