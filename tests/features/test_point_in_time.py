"""Property: nothing dated at or after a snapshot's cutoff changes that snapshot's features.

Random tiny warehouses are built around a snapshot; then everything the snapshot must not
know is changed: rows dated at or after the cutoff are replaced by others, first
responses, resolutions and subscription ends at or after it are moved (or erased), the
undated fields of contacts not yet resolved (CSAT, transfers, reopened) are redrawn, and
customers who sign up only later get other attributes. The features of the snapshot (and
of an earlier one built in the same query) stay exactly the same.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from features.build import FeatureConfig, LabelKind, build_features, snapshot_cutoff
from features.labels import build_labels
from tests.features.frames import make_sources

SNAPSHOT = date(2026, 3, 1)
EARLIER = date(2026, 1, 20)
LATER = date(2026, 3, 20)
CUSTOMERS = (1, 2, 3)
EVENT_TYPES = ("login", "order")
MINUTE = timedelta(minutes=1)
DAY_MINUTES = 24 * 60
BOUNDARIES = (0, -7 * DAY_MINUTES, -30 * DAY_MINUTES, -90 * DAY_MINUTES, -1, 1)

Rows = dict[str, list[dict[str, Any]]]


def past_offsets() -> st.SearchStrategy[int]:
    """Minutes relative to the cutoff, before it, often right at a window boundary."""
    return st.one_of(
        st.integers(-130 * DAY_MINUTES, -1),
        st.sampled_from([b for b in BOUNDARIES if b < 0]),
    )


def future_offsets() -> st.SearchStrategy[int]:
    """Minutes relative to the cutoff, at or after it."""
    return st.one_of(st.integers(0, 60 * DAY_MINUTES), st.just(0))


def any_offsets() -> st.SearchStrategy[int]:
    return st.one_of(past_offsets(), future_offsets())


def maybe_future(draw: st.DrawFn) -> int | None:
    """A null or an instant at or after the cutoff: both mean "not yet" at the snapshot."""
    return draw(st.one_of(st.none(), future_offsets()))


def at(cutoff: datetime, minutes: int | None) -> datetime | None:
    return None if minutes is None else cutoff + minutes * MINUTE


def draw_undated(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "transfers": draw(st.integers(0, 4)),
        "reopened": draw(st.booleans()),
        "csat": draw(st.one_of(st.none(), st.integers(1, 5))),
    }


def draw_interaction(draw: st.DrawFn, cutoff: datetime, opened: int) -> dict[str, Any]:
    def after_opening() -> int | None:
        delay = draw(st.one_of(st.none(), st.integers(0, 20 * DAY_MINUTES), st.just(10 * 60)))
        return None if delay is None else opened + delay

    return {
        "customer_id": draw(st.sampled_from(CUSTOMERS)),
        "opened_at": at(cutoff, opened),
        "channel": draw(st.sampled_from(["email", "phone", "twitter", "facebook"])),
        "kind": draw(st.sampled_from(["complaint", "complaint", "query"])),
        "is_public": draw(st.booleans()),
        "first_response_at": at(cutoff, after_opening()),
        "resolved_at": at(cutoff, after_opening()),
        **draw_undated(draw),
    }


def draw_subscription(draw: st.DrawFn, cutoff: datetime, started: int) -> dict[str, Any]:
    length = draw(st.one_of(st.none(), st.integers(0, 200 * DAY_MINUTES)))
    return {
        "customer_id": draw(st.sampled_from(CUSTOMERS)),
        "started_at": at(cutoff, started),
        "ended_at": at(cutoff, None if length is None else started + length),
        "plan": draw(st.sampled_from(["basic", "pro", None])),
        "mrr": draw(st.one_of(st.none(), st.sampled_from([10.0, 20.0, 50.0]))),
    }


def draw_activity(draw: st.DrawFn, cutoff: datetime, occurred: int) -> dict[str, Any]:
    return {
        "customer_id": draw(st.sampled_from(CUSTOMERS)),
        "occurred_at": at(cutoff, occurred),
        "event_type": draw(st.sampled_from([*EVENT_TYPES, "refund"])),
        "value": draw(st.one_of(st.none(), st.floats(0, 100, allow_nan=False))),
    }


def draw_customer(draw: st.DrawFn, cutoff: datetime, customer_id: int) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "signup_at": at(cutoff, draw(any_offsets()) - 200 * DAY_MINUTES * draw(st.booleans())),
        "segment": draw(st.sampled_from(["smb", "consumer", None])),
        "monthly_value": draw(st.one_of(st.none(), st.floats(0, 500, allow_nan=False))),
    }


@st.composite
def warehouses(draw: st.DrawFn, cutoff: datetime) -> Rows:
    def some(row: Any, offsets: st.SearchStrategy[int], most: int) -> list[dict[str, Any]]:
        times = draw(st.lists(offsets, max_size=most))
        return [row(draw, cutoff, t) for t in times]

    return {
        "customers": [draw_customer(draw, cutoff, c) for c in CUSTOMERS],
        "subscriptions": some(draw_subscription, any_offsets(), 6),
        "interactions": some(draw_interaction, any_offsets(), 12),
        "activity": some(draw_activity, any_offsets(), 12),
    }


def hide_the_future(draw: st.DrawFn, rows: Rows, cutoff: datetime) -> Rows:
    """The same warehouse as seen at ``cutoff``, with everything not yet known redrawn."""

    def before(value: datetime | None) -> bool:
        return value is not None and value < cutoff

    customers = [
        c
        if before(c["signup_at"])
        else {
            **c,
            "segment": draw(st.sampled_from(["enterprise", None])),
            "monthly_value": draw(st.one_of(st.none(), st.just(1.0))),
        }
        for c in rows["customers"]
    ]
    interactions = []
    for row in rows["interactions"]:
        if not before(row["opened_at"]):
            continue
        changed = dict(row)
        for name in ("first_response_at", "resolved_at"):
            if not before(row[name]):
                changed[name] = at(cutoff, maybe_future(draw))
        if not before(row["resolved_at"]):
            changed.update(draw_undated(draw))
        interactions.append(changed)
    subscriptions = []
    for row in rows["subscriptions"]:
        if not before(row["started_at"]):
            continue
        changed = dict(row)
        if not before(row["ended_at"]):
            changed["ended_at"] = at(cutoff, maybe_future(draw))
        subscriptions.append(changed)
    activity = [row for row in rows["activity"] if before(row["occurred_at"])]
    new = draw(warehouses(cutoff))

    def future(name: str, column: str) -> list[dict[str, Any]]:
        return [row for row in new[name] if not before(row[column])]

    return {
        "customers": customers,
        "subscriptions": subscriptions + future("subscriptions", "started_at"),
        "interactions": interactions + future("interactions", "opened_at"),
        "activity": activity + future("activity", "occurred_at"),
    }


@st.composite
def as_seen_at(draw: st.DrawFn, rows: Rows, cutoff: datetime) -> Rows:
    """Strategy for :func:`hide_the_future`."""
    return hide_the_future(draw, rows, cutoff)


def features(rows: Rows, config: FeatureConfig) -> pl.DataFrame:
    sources = make_sources(**rows)
    frame = build_features(sources, [EARLIER, SNAPSHOT, LATER], config, EVENT_TYPES)
    return frame.filter(pl.col("snapshot_date") <= SNAPSHOT).collect()


def differences(before: pl.DataFrame, after: pl.DataFrame) -> list[tuple[Any, ...]]:
    """(snapshot, customer, column, before, after) for every value that differs."""
    if (
        before.select("snapshot_date", "customer_id").rows()
        != after.select("snapshot_date", "customer_id").rows()
    ):
        return [("population", before["customer_id"].to_list(), after["customer_id"].to_list())]
    found = []
    for b, a in zip(before.iter_rows(named=True), after.iter_rows(named=True), strict=True):
        for column, value in b.items():
            if value != a[column] and not (value is None and a[column] is None):
                found.append((b["snapshot_date"], b["customer_id"], column, value, a[column]))
    return found


def assert_same(before: pl.DataFrame, after: pl.DataFrame, kind: str) -> None:
    """Equal up to float rounding (sums may add the same numbers in another order)."""
    try:
        assert_frame_equal(before, after, rel_tol=1e-9, abs_tol=1e-12)
    except AssertionError as exc:
        raise AssertionError((kind, differences(before, after))) from exc


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), tz=st.sampled_from(["UTC", "America/New_York"]))
def test_rows_dated_at_or_after_the_cutoff_never_change_features(
    data: st.DataObject, tz: str
) -> None:
    kinds: tuple[LabelKind, ...] = ("subscription", "inactivity")
    for kind in kinds:
        config = FeatureConfig(timezone=tz, label_kind=kind)
        cutoff = snapshot_cutoff(SNAPSHOT, tz)
        rows = data.draw(warehouses(cutoff), label="warehouse")
        changed = data.draw(as_seen_at(rows, cutoff), label="changed")
        before = features(rows, config)
        after = features(changed, config)
        assert_same(before, after, kind)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), kind=st.sampled_from(["subscription", "inactivity"]))
def test_labels_ignore_everything_after_the_horizon(data: st.DataObject, kind: str) -> None:
    config = FeatureConfig(horizon_days=20, label_kind=kind)  # type: ignore[arg-type]
    horizon_end = snapshot_cutoff(SNAPSHOT + timedelta(days=20), "UTC")
    rows = data.draw(warehouses(horizon_end))
    changed = data.draw(as_seen_at(rows, horizon_end))
    known = horizon_end + timedelta(days=400)

    def labels(r: Rows) -> pl.DataFrame:
        return build_labels(make_sources(**r), [SNAPSHOT], config, known_until=known).collect()

    assert_frame_equal(labels(rows), labels(changed), check_exact=True)
