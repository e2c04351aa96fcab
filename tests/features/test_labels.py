"""Churn labels: renewals, re-activations, cancellations and incomplete horizons."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import pytest

from features.build import FeatureConfig, build_features
from features.labels import LABEL_SCHEMA, build_labels, horizon_end, labelled_snapshots
from tests.features.frames import make_sources, ts

SNAPSHOT = date(2026, 3, 1)  # horizon of 30 days ends 2026-03-31 00:00 UTC
KNOWN = datetime(2026, 6, 1, tzinfo=UTC)
CONFIG = FeatureConfig(horizon_days=30)


def sub(customer_id: int, start: str, end: str | None) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "started_at": ts(start),
        "ended_at": ts(end) if end else None,
        "plan": "pro",
        "mrr": 10.0,
    }


def labels(frame: pl.LazyFrame) -> dict[tuple[date, int], bool]:
    collected = frame.collect()
    assert collected.schema == LABEL_SCHEMA
    return {(d, c): churned for d, c, churned in collected.iter_rows()}


SUBSCRIPTIONS = [
    # 1: renewal after a gap, subscribed again before the horizon ends: stays
    sub(1, "2025-06-01", "2026-03-10"),
    sub(1, "2026-03-20", None),
    # 2: renewal after a gap that spans the horizon end: churned
    sub(2, "2025-06-01", "2026-03-25"),
    sub(2, "2026-04-05", None),
    # 3: back-to-back renewals: stays
    sub(3, "2025-06-01", "2026-03-15"),
    sub(3, "2026-03-15", "2026-04-15"),
    # 4: cancels on the snapshot day: in the population, churned
    sub(4, "2025-06-01", "2026-03-01 10:00"),
    # 5: ended exactly at the snapshot instant: had not ended before it, churned
    sub(5, "2025-06-01", "2026-03-01"),
    # 6: starts after the snapshot: not in the population
    sub(6, "2026-03-05", None),
    # 7: ends exactly at the horizon end: still active just before it
    sub(7, "2025-06-01", "2026-03-31"),
    # 8: ends one microsecond before the horizon end: churned
    sub(8, "2025-06-01", "2026-03-30 23:59:59.999999"),
    # 9: ended long ago, re-activates inside the horizon: not in this snapshot's population
    sub(9, "2025-06-01", "2025-09-01"),
    sub(9, "2026-03-10", None),
]


def test_subscription_labels() -> None:
    sources = make_sources(subscriptions=SUBSCRIPTIONS)
    result = labels(build_labels(sources, [SNAPSHOT], CONFIG, known_until=KNOWN))
    assert result == {
        (SNAPSHOT, 1): False,
        (SNAPSHOT, 2): True,
        (SNAPSHOT, 3): False,
        (SNAPSHOT, 4): True,
        (SNAPSHOT, 5): True,
        (SNAPSHOT, 7): False,
        (SNAPSHOT, 8): True,
    }


def test_labels_cover_exactly_the_feature_population() -> None:
    sources = make_sources(subscriptions=SUBSCRIPTIONS)
    snapshots = [SNAPSHOT, date(2026, 3, 12), date(2026, 2, 1)]
    label_keys = (
        build_labels(sources, snapshots, CONFIG, known_until=KNOWN)
        .select("snapshot_date", "customer_id")
        .collect()
    )
    feature_keys = (
        build_features(sources, snapshots, CONFIG, []).select("snapshot_date", "customer_id")
    ).collect()
    assert label_keys.equals(feature_keys)


def test_reactivation_and_gaps_across_several_snapshots() -> None:
    sources = make_sources(subscriptions=SUBSCRIPTIONS)
    result = labels(build_labels(sources, [date(2026, 3, 12), SNAPSHOT], CONFIG, known_until=KNOWN))
    later = date(2026, 3, 12)  # horizon ends 2026-04-11
    assert (later, 1) not in result  # between two subscriptions at this snapshot
    assert result[(later, 2)] is False  # renewed on 04-05, before the horizon end
    assert result[(later, 3)] is False
    assert result[(later, 9)] is False  # re-activated on 03-10: active at this snapshot
    assert (later, 4) not in result  # left on 03-01
    assert result[(SNAPSHOT, 4)] is True
    assert result[(SNAPSHOT, 1)] is False


def test_incomplete_horizons_have_no_labels() -> None:
    sources = make_sources(subscriptions=SUBSCRIPTIONS)
    february = date(2026, 2, 1)  # horizon ends 2026-03-03
    snapshots = [february, SNAPSHOT]
    almost = datetime(2026, 3, 30, 23, 59, tzinfo=UTC)
    assert labelled_snapshots(snapshots, CONFIG, known_until=almost) == [february]
    result = labels(build_labels(sources, snapshots, CONFIG, known_until=almost))
    assert {d for d, _ in result} == {february}
    exactly = horizon_end(SNAPSHOT, CONFIG)
    assert exactly == datetime(2026, 3, 31, tzinfo=UTC)
    assert labelled_snapshots(snapshots, CONFIG, known_until=exactly) == [february, SNAPSHOT]
    none = build_labels(sources, [SNAPSHOT], CONFIG, known_until=almost).collect()
    assert none.height == 0
    assert none.schema == LABEL_SCHEMA


def test_horizon_end_follows_the_time_zone() -> None:
    berlin = FeatureConfig(timezone="Europe/Berlin", horizon_days=30)
    # 2026-03-31 00:00 in Berlin is 2026-03-30 22:00 UTC (summer time since 03-29)
    assert horizon_end(SNAPSHOT, berlin) == datetime(2026, 3, 30, 22, tzinfo=UTC)
    sources = make_sources(subscriptions=[sub(1, "2025-06-01", "2026-03-30 23:00")])
    assert labels(build_labels(sources, [SNAPSHOT], berlin, known_until=KNOWN)) == {
        (SNAPSHOT, 1): False
    }
    assert labels(build_labels(sources, [SNAPSHOT], CONFIG, known_until=KNOWN)) == {
        (SNAPSHOT, 1): True
    }


def test_known_until_must_be_aware() -> None:
    sources = make_sources(subscriptions=SUBSCRIPTIONS)
    with pytest.raises(ValueError, match="time-zone aware"):
        build_labels(sources, [SNAPSHOT], CONFIG, known_until=datetime(2026, 6, 1))


def event(customer_id: int, at: str, event_type: str = "login") -> dict[str, Any]:
    return {"customer_id": customer_id, "occurred_at": ts(at), "event_type": event_type}


def test_inactivity_labels() -> None:
    config = FeatureConfig(label_kind="inactivity", inactivity_days=30, horizon_days=30)
    sources = make_sources(
        activity=[
            event(1, "2026-02-20"),
            event(1, "2026-03-15"),  # active inside the horizon: stays
            event(2, "2026-02-20"),  # nothing after: churned
            event(3, "2026-02-20"),
            event(3, "2026-03-01 00:00"),  # at the snapshot instant: inside the horizon
            event(4, "2026-02-20"),
            event(4, "2026-03-31 00:00"),  # at the horizon end: outside it, churned
            event(5, "2026-01-15"),  # inactive before the snapshot: not in the population
            event(5, "2026-03-10"),
            event(6, "2026-01-30 00:00", "refund"),  # any event type counts, at N days exactly
            event(6, "2026-03-29 23:00", "review"),  # re-activated just before the end
        ]
    )
    result = labels(build_labels(sources, [SNAPSHOT], config, known_until=KNOWN))
    assert result == {
        (SNAPSHOT, 1): False,
        (SNAPSHOT, 2): True,
        (SNAPSHOT, 3): False,
        (SNAPSHOT, 4): True,
        (SNAPSHOT, 6): False,
    }
