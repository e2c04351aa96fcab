"""The rows the nightly job reads are enough: its features equal those of the full history.

Scoring reads only the window :func:`models.nightly.scoring_window` gives (pushed into SQL by
:func:`warehouse.extract.source_query`); training reads from much earlier. Both must give the
same features for the same snapshot, or the champion sees other numbers at night than it
learned from.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.build import (
    FeatureConfig,
    FutureDateError,
    build_features,
    discover_event_types,
    snapshot_cutoff,
)
from models.nightly import scoring_window
from models.retraining import TrainingPlanError, training_plan
from tests.features.frames import make_sources, ts
from warehouse.demo import generate_demo
from warehouse.extract import source_query
from warehouse.schema import SOURCE_TABLES, build_warehouse
from warehouse.settings import Settings

END = date(2026, 6, 1)


@cache
def _history() -> dict[str, pl.DataFrame]:
    return generate_demo(n_customers=600, days=300, seed=11, end=END)


def _as_read_for(settings: Settings, as_of: date) -> dict[str, pl.LazyFrame]:
    """The demo history as the nightly job would read it for ``as_of`` (exact row filter)."""
    window = scoring_window(settings, as_of, now=datetime(2030, 1, 1, tzinfo=UTC))
    wh = build_warehouse(settings)
    frames: dict[str, pl.LazyFrame] = {}
    for name in SOURCE_TABLES:
        _, exact = source_query(
            wh, name, window_start=window.start, window_end=window.end, dialect="postgresql"
        )
        frames[name] = _history()[name].lazy().filter(exact)
    return frames


@pytest.mark.parametrize(
    ("label_kind", "inactivity_days"), [("subscription", 30), ("inactivity", 120)]
)
def test_the_scoring_window_gives_the_features_of_the_full_history(
    label_kind: str, inactivity_days: int
) -> None:
    settings = Settings(label_kind=label_kind, inactivity_days=inactivity_days)
    config = FeatureConfig.from_settings(settings)
    full = {name: frame.lazy() for name, frame in _history().items()}
    event_types = discover_event_types(full["activity"], config.max_event_types)
    for as_of in (date(2026, 3, 1), date(2026, 5, 17)):
        read = _as_read_for(settings, as_of)
        assert (
            read["interactions"].select(pl.len()).collect().item()
            < _history()["interactions"].height
        )
        expected = build_features(full, [as_of], config, event_types).collect()
        actual = build_features(read, [as_of], config, event_types).collect()
        assert expected.height > 100
        assert_frame_equal(actual, expected)


@pytest.mark.parametrize("timezone", ["Europe/Berlin", "America/New_York", "Australia/Sydney"])
def test_the_windows_start_at_a_local_midnight_across_daylight_saving(timezone: str) -> None:
    """A window of N days that spans a clock change still starts at a local midnight.

    The features' lookback starts at ``snapshot_cutoff(d - N)``; a window start 24 x N hours
    before the cutoff would be an hour off and move rows in or out.
    """
    settings = Settings(timezone=timezone, label_kind="inactivity", inactivity_days=120)
    later = datetime(2030, 1, 1, tzinfo=UTC)
    history = FeatureConfig.from_settings(settings).history_days
    as_of = date(2026, 1, 15)
    window = scoring_window(settings, as_of, now=later)
    days = max(history, settings.cooldown_days)
    assert window.start == snapshot_cutoff(as_of - timedelta(days=days), timezone)
    assert window.start.astimezone(ZoneInfo(timezone)).time() == time(0)
    # The offsets differ: the window really spans a clock change.
    assert (
        window.start.astimezone(ZoneInfo(timezone)).utcoffset()
        != window.cutoff.astimezone(ZoneInfo(timezone)).utcoffset()
    )

    plan = training_plan(settings, date(2026, 1, 15), now=later)
    assert plan.start == snapshot_cutoff(plan.snapshots[0] - timedelta(days=history), timezone)
    assert plan.start.astimezone(ZoneInfo(timezone)).time() == time(0)


def test_today_reads_to_now_a_past_day_to_its_cutoff_and_a_future_day_is_refused() -> None:
    settings = Settings(timezone="Europe/Berlin")
    # 00:30 on 2 March in Berlin, still 1 March in UTC.
    now = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)

    today = scoring_window(settings, date(2026, 3, 2), now=now)
    assert today.end is None and today.future_after == now
    assert today.cutoff == datetime(2026, 3, 1, 23, tzinfo=UTC)

    backfill = scoring_window(settings, date(2026, 2, 10), now=now)
    assert backfill.end == backfill.cutoff == backfill.future_after
    assert backfill.cutoff == datetime(2026, 2, 9, 23, tzinfo=UTC)

    with pytest.raises(FutureDateError, match=r"scoring as of 2026-03-03 is not possible yet"):
        scoring_window(settings, date(2026, 3, 3), now=now)

    # Training: the newest snapshot's horizon ends at the cutoff of as_of.
    assert training_plan(settings, date(2026, 3, 2), now=now).end is None
    past = training_plan(settings, date(2026, 2, 10), now=now)
    assert past.end == past.known_until == snapshot_cutoff(date(2026, 2, 10), "Europe/Berlin")
    with pytest.raises(TrainingPlanError, match=r"horizon to have passed"):
        training_plan(settings, date(2026, 3, 3), now=now)


def test_a_downgrade_is_judged_the_same_from_the_window_and_from_the_full_history() -> None:
    """The previous subscription is one still running in the lookback, however much older
    history was read: B (ended long ago) is not C's previous one, A (still open) is."""
    settings = Settings()
    as_of = date(2026, 3, 1)
    full = make_sources(
        subscriptions=[
            {"customer_id": 1, "started_at": ts("2024-01-01"), "plan": "pro", "mrr": 100.0},
            {
                "customer_id": 1,
                "started_at": ts("2024-06-01"),
                "ended_at": ts("2024-07-01"),
                "plan": "max",
                "mrr": 200.0,
            },
            {"customer_id": 1, "started_at": ts("2026-02-20"), "plan": "basic", "mrr": 50.0},
        ]
    )
    window = scoring_window(settings, as_of, now=datetime(2030, 1, 1, tzinfo=UTC))
    wh = build_warehouse(settings)
    read = {}
    for name in SOURCE_TABLES:
        _, exact = source_query(
            wh, name, window_start=window.start, window_end=window.end, dialect="postgresql"
        )
        read[name] = full[name].filter(exact)
    assert read["subscriptions"].select(pl.len()).collect().item() == 2  # B is not read
    config = FeatureConfig.from_settings(settings)
    columns = ["plan_downgrades_30d", "plan_downgrades_90d"]
    expected = build_features(full, [as_of], config, []).select(columns).collect()
    actual = build_features(read, [as_of], config, []).select(columns).collect()
    assert expected.rows() == actual.rows() == [(1.0, 1.0)]
