"""Feature values pinned on tiny literal frames."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from features.build import (
    FeatureConfig,
    build_features,
    discover_event_types,
    population,
    snapshot_cutoff,
    source_frame,
)
from features.registry import feature_columns, feature_schema, helper_columns
from tests.features.frames import make_sources, subscribed, ts
from warehouse.settings import Settings

SNAPSHOT = date(2026, 3, 1)
CONFIG = FeatureConfig()


def one_row(frame: pl.LazyFrame, customer_id: int = 1, d: date = SNAPSHOT) -> dict[str, Any]:
    rows = (
        frame.filter((pl.col("customer_id") == customer_id) & (pl.col("snapshot_date") == d))
        .collect()
        .to_dicts()
    )
    assert len(rows) == 1, rows
    return rows[0]


def assert_values(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, float):
            assert row[name] == pytest.approx(value), name
        else:
            assert row[name] == value, name


# -- cutoff ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("d", "tz", "expected"),
    [
        (date(2026, 3, 1), "UTC", datetime(2026, 3, 1, tzinfo=UTC)),
        (date(2026, 7, 1), "Europe/Berlin", datetime(2026, 6, 30, 22, tzinfo=UTC)),
        (date(2026, 3, 9), "America/New_York", datetime(2026, 3, 9, 4, tzinfo=UTC)),
        (date(2026, 3, 2), "America/New_York", datetime(2026, 3, 2, 5, tzinfo=UTC)),
        # Havana skips from 00:00 to 01:00 on 2026-03-08: the day starts at 01:00 local.
        (date(2026, 3, 8), "America/Havana", datetime(2026, 3, 8, 5, tzinfo=UTC)),
    ],
)
def test_snapshot_cutoff_is_start_of_local_day(d: date, tz: str, expected: datetime) -> None:
    assert snapshot_cutoff(d, tz) == expected


# -- interactions ------------------------------------------------------------------------------


def interaction(opened: str, kind: str, channel: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"customer_id": 1, "opened_at": ts(opened), "kind": kind}
    row["channel"] = channel
    for name in ("first_response_at", "resolved_at"):
        if fields.get(name) is not None:
            fields[name] = ts(fields[name])
    return {**row, **fields}


INTERACTIONS = [
    # A: open complaint, never answered
    interaction("2026-02-20 10:00", "complaint", "email"),
    # B: public (twitter) complaint resolved before the cutoff, answered only after it
    interaction(
        "2026-02-27 10:00",
        "complaint",
        "twitter",
        first_response_at="2026-03-02 10:00",
        resolved_at="2026-02-28 00:00",
        transfers=2,
        reopened=True,
        csat=2,
    ),
    # C: query answered after 12 h, resolved after 24 h
    interaction(
        "2026-02-25 00:00",
        "query",
        "chat",
        first_response_at="2026-02-25 12:00",
        resolved_at="2026-02-26 00:00",
        csat=5,
    ),
    # D: opened exactly at the cutoff: not part of the snapshot
    interaction("2026-03-01 00:00", "complaint", "twitter", is_public=True),
    # E: 45 days before, answered after 30 h, resolved after 120 h
    interaction(
        "2026-01-15 00:00",
        "complaint",
        "phone",
        first_response_at="2026-01-16 06:00",
        resolved_at="2026-01-20 00:00",
        transfers=1,
        csat=4,
    ),
    # F: one hour before the 90-day window, never resolved: outside every window (but a
    # previous contact), still open at the snapshot
    interaction("2025-11-30 23:00", "complaint", "email"),
    # G: exactly at the 90-day window start, marked public
    interaction(
        "2025-12-01 00:00",
        "complaint",
        "email",
        is_public=True,
        first_response_at="2025-12-01 05:00",
        resolved_at="2025-12-02 00:00",
        csat=1,
    ),
    # H: exactly at the 7-day window start, answered after 24 h, resolved after the cutoff
    interaction(
        "2026-02-22 00:00",
        "complaint",
        "facebook",
        first_response_at="2026-02-23 00:00",
        resolved_at="2026-03-05 00:00",
        transfers=3,
        csat=1,
    ),
    # I: exactly at the 30-day window start, answered after 11 h
    interaction(
        "2026-01-30 00:00",
        "request",
        "email",
        first_response_at="2026-01-30 11:00",
        resolved_at="2026-01-31 00:00",
    ),
]


def interaction_row(**config: Any) -> dict[str, Any]:
    sources = make_sources(subscriptions=subscribed(1), interactions=INTERACTIONS)
    return one_row(build_features(sources, [SNAPSHOT], FeatureConfig(**config), []))


def test_open_problem_features() -> None:
    assert_values(
        interaction_row(),
        {
            "open_complaints": 3.0,  # A, H (resolved only after the cutoff), F (however old)
            "oldest_open_complaint_days": 90 + 1 / 24,  # F
            "complaints_7d": 2.0,  # B, H (at the window start)
            "complaints_30d": 3.0,  # A, B, H
            "complaints_90d": 5.0,  # + E, G (at the window start); not F, not D
            "reopened_complaints_30d": 1.0,  # B
            "reopened_complaints_90d": 1.0,
        },
    )


def test_responsiveness_features_count_answers_after_the_cutoff_as_missing() -> None:
    assert_values(
        interaction_row(),
        {
            # answered before the cutoff: C 12 h, H 24 h, I 11 h, E 30 h, G 5 h; B only after it
            "first_response_hours_mean_7d": 18.0,
            "first_response_hours_max_7d": 24.0,
            "first_response_hours_mean_30d": 47 / 3,
            "first_response_hours_max_30d": 24.0,
            "first_response_hours_mean_90d": 82 / 5,
            "first_response_hours_max_90d": 30.0,
            "first_response_hours_p90_90d": 27.6,  # 24 + 0.6 * (30 - 24)
            "answered_after_10h_7d": 2.0,  # C, H
            "answered_after_10h_30d": 3.0,  # C, H, I
            "answered_after_10h_90d": 4.0,  # + E
            "answered_after_24h_7d": 0.0,  # H took exactly 24 h
            "answered_after_24h_30d": 0.0,
            "answered_after_24h_90d": 1.0,  # E
            "unanswered_contacts_7d": 1.0,  # B
            "unanswered_contacts_30d": 2.0,  # A, B
            "unanswered_contacts_90d": 2.0,
            "longest_unanswered_wait_hours_30d": 8 * 24 + 14.0,  # A
            # resolved before the cutoff: B 14 h, C 24 h, I 24 h, E 120 h, G 24 h; H after it
            "resolution_hours_mean_30d": 62 / 3,
            "resolution_hours_mean_90d": 206 / 5,
            "resolution_hours_max_90d": 120.0,
        },
    )


def test_public_moment_features() -> None:
    row = interaction_row()
    assert_values(
        row,
        {
            # public: B (twitter), H (facebook), G (marked public); D is at the cutoff
            "public_complaints_7d": 2.0,
            "public_complaints_30d": 2.0,
            "public_complaints_90d": 3.0,
            "public_complaints_unanswered_30d": 1.0,  # B
            "public_complaints_unanswered_90d": 1.0,
            "public_first_response_hours_max_90d": 24.0,  # H
            "slowest_public_channel_90d": "facebook",
            "unanswered_public_channel_30d": "twitter",
        },
    )


def test_public_channels_come_from_the_config() -> None:
    row = interaction_row(public_channels=("email",))
    # public now: A, F (outside), G (marked), I is a request; B and H are not
    assert row["public_complaints_30d"] == 1.0  # A
    assert row["public_complaints_90d"] == 2.0  # A, G
    assert row["unanswered_public_channel_30d"] == "email"


def test_effort_satisfaction_and_recency_features() -> None:
    assert_values(
        interaction_row(),
        {
            "contacts_7d": 3.0,  # B, C, H
            "contacts_30d": 5.0,  # + A, I
            "contacts_90d": 7.0,  # + E, G
            # transfers of contacts resolved before the cutoff: B 2, C 0, I 0 | E 1, G 0
            "transfers_per_contact_30d": 2 / 3,
            "transfers_per_contact_90d": 3 / 5,
            # repeats (within 7 days of the previous contact): G (after F), H, C, B
            "repeat_contacts_30d": 3.0,
            "repeat_contacts_90d": 4.0,
            # CSAT of contacts resolved before the cutoff: B 2, C 5 | E 4, G 1; not H
            "csat_mean_30d": 3.5,
            "csat_mean_90d": 3.0,
            "low_csat_7d": 1.0,
            "low_csat_30d": 1.0,
            "low_csat_90d": 2.0,
            "days_since_last_contact": 1 + 14 / 24,  # B
        },
    )


def test_row_at_the_cutoff_enters_the_next_snapshot() -> None:
    sources = make_sources(subscriptions=subscribed(1), interactions=INTERACTIONS)
    frame = build_features(sources, [SNAPSHOT, date(2026, 3, 2)], CONFIG, [])
    assert one_row(frame)["public_complaints_30d"] == 2.0
    later = one_row(frame, d=date(2026, 3, 2))
    assert later["public_complaints_30d"] == 3.0  # B, H, D
    assert later["unanswered_contacts_7d"] == 2.0  # B (answered 03-02 10:00), D


def test_customer_without_rows_gets_zero_counts_and_null_measures() -> None:
    sources = make_sources(subscriptions=subscribed(1, 2), interactions=INTERACTIONS)
    row = one_row(build_features(sources, [SNAPSHOT], CONFIG, ["login"]), customer_id=2)
    assert row["contacts_90d"] == 0.0
    assert row["open_complaints"] == 0.0
    assert row["activity_login_events_30d"] == 0.0
    assert row["first_response_hours_mean_90d"] is None
    assert row["oldest_open_complaint_days"] is None
    assert row["days_since_last_contact"] is None
    assert row["days_since_last_activity"] is None
    assert row["activity_trend_30d"] is None


# -- activity ----------------------------------------------------------------------------------


def event(
    at: str, event_type: str, value: float | None = None, customer_id: int = 1
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "occurred_at": ts(at),
        "event_type": event_type,
        "value": value,
    }


ACTIVITY = [
    event("2026-02-28 12:00", "login"),  # 7d
    event("2026-02-10 00:00", "login"),  # 30d
    event("2026-01-30 00:00", "order", 20.0),  # 30d, at its start
    event("2026-01-29 23:59", "order", 10.0),  # 90d, the 60 days before the last 30
    event("2025-12-01 00:00", "login"),  # 90d, at its start
    event("2025-11-30 23:59", "login"),  # outside
    event("2026-03-01 00:00", "order", 99.0),  # at the cutoff: outside
    event("2026-02-28 13:00", "pageview"),  # not a model event type: no columns, but activity
]


def test_engagement_features() -> None:
    sources = make_sources(subscriptions=subscribed(1), activity=ACTIVITY)
    row = one_row(build_features(sources, [SNAPSHOT], CONFIG, ["login", "order"]))
    assert_values(
        row,
        {
            "activity_events_7d": 2.0,
            "activity_events_30d": 4.0,
            "activity_events_90d": 6.0,
            "activity_trend_30d": 4.0,  # 4 against 2 in 60 days, i.e. 1 per 30 days
            "activity_drop_30d": -3.0,
            "days_since_last_activity": 11 / 24,  # the pageview at 13:00
            "activity_login_events_30d": 2.0,
            "activity_login_events_90d": 3.0,
            "activity_login_value_90d": 0.0,
            "activity_order_events_30d": 1.0,
            "activity_order_events_90d": 2.0,
            "activity_order_value_90d": 30.0,
        },
    )


@pytest.mark.parametrize("large", [1e15, -1e15, 3e12])
def test_one_customers_large_values_leave_every_other_customers_sums_exact(large: float) -> None:
    """Value sums are exact per customer, whatever other customers' values are. With Float64
    running totals, customer 1's value would blur the sums of every customer after it (with
    1e15, customer 3's 0.001 read 0.0)."""
    sources = make_sources(
        subscriptions=subscribed(1, 2, 3),
        activity=[
            event("2026-02-01", "order", large),
            *(e | {"customer_id": 2} for e in ACTIVITY),
            event("2026-01-15", "order", 0.1, customer_id=3),
            event("2026-01-16", "order", 0.2, customer_id=3),
            event("2026-01-17", "order", 0.001, customer_id=3),
        ],
    )
    frame = build_features(sources, [SNAPSHOT], CONFIG, ["order"])
    assert one_row(frame)["activity_order_value_90d"] == large
    assert one_row(frame, customer_id=2)["activity_order_value_90d"] == 30.0
    assert one_row(frame, customer_id=3)["activity_order_value_90d"] == 0.301


def test_values_beyond_the_plausible_stop_the_build_instead_of_being_summed() -> None:
    sources = make_sources(
        subscriptions=subscribed(1), activity=[event("2026-02-01", "order", 1e300)]
    )
    with pytest.raises(pl.exceptions.InvalidOperationError, match="conversion"):
        build_features(sources, [SNAPSHOT], CONFIG, ["order"]).collect()


def test_activity_trend_without_prior_activity_is_null_and_stopped_activity_is_zero() -> None:
    sources = make_sources(
        subscriptions=subscribed(1, 2),
        activity=[event("2026-02-20", "login"), event("2026-01-01", "login", customer_id=2)],
    )
    frame = build_features(sources, [SNAPSHOT], CONFIG, ["login"])
    assert one_row(frame)["activity_trend_30d"] is None
    stopped = one_row(frame, customer_id=2)
    assert stopped["activity_trend_30d"] == 0.0
    assert stopped["activity_drop_30d"] == 1.0


def test_event_types_without_features_of_their_own_still_count_as_activity() -> None:
    sources = make_sources(subscriptions=subscribed(1), activity=ACTIVITY)
    frame = build_features(sources, [SNAPSHOT], CONFIG, ["order", "refund"])
    row = one_row(frame)
    assert [c for c in frame.collect_schema() if c.startswith("activity_") and "_value_" in c] == [
        "activity_order_value_90d",
        "activity_refund_value_90d",
    ]
    assert "activity_login_events_30d" not in row
    assert row["activity_refund_events_90d"] == 0.0
    # login and pageview have no columns, but a login yesterday is not "no activity".
    assert row["activity_events_90d"] == 6.0
    assert row["days_since_last_activity"] == pytest.approx(11 / 24)


def test_discover_event_types_by_frequency_then_name_with_cap() -> None:
    activity = make_sources(
        activity=[
            event("2026-01-01", "order"),
            event("2026-01-02", "login"),
            event("2026-01-03", "login"),
            event("2026-01-04", "refund"),
            event("2026-01-05", "Log In"),
            event("2026-01-06", "log-in"),
            event("2026-01-07", "log-in"),
            event("2026-01-08", "log-in"),
        ]
    )["activity"]
    assert discover_event_types(activity, 10) == ["log-in", "login", "order", "refund"]
    assert discover_event_types(activity, 2) == ["log-in", "login"]
    assert discover_event_types(activity, 0) == []


# -- subscriptions, customers, population ------------------------------------------------------


def sub(customer_id: int, start: str, end: str | None, plan: str, mrr: float) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "started_at": ts(start),
        "ended_at": ts(end) if end else None,
        "plan": plan,
        "mrr": mrr,
    }


SUBSCRIPTIONS = [
    sub(1, "2025-01-01", "2026-01-10", "pro", 50.0),
    sub(1, "2026-01-10", None, "basic", 20.0),  # downgrade 50 days before
    sub(1, "2026-03-01", None, "max", 90.0),  # starts at the cutoff: not yet
    sub(2, "2025-06-01", None, "pro", 30.0),
    sub(3, "2025-06-01", None, "pro", 30.0),
    sub(3, "2026-02-01", None, "addon", 10.0),  # a second, concurrent subscription
    sub(4, "2025-06-01", "2026-03-01", "pro", 30.0),  # ends at the cutoff: had not ended before
    sub(5, "2025-06-01", "2026-03-01 10:00", "pro", 30.0),  # cancels on the snapshot day
    sub(6, "2026-03-01", None, "pro", 30.0),  # starts at the cutoff: not yet a customer
]
CUSTOMERS: list[dict[str, Any]] = [
    {"customer_id": 1, "signup_at": ts("2025-01-01"), "segment": "smb", "monthly_value": 80.0},
    {"customer_id": 2, "signup_at": ts("2026-03-05"), "segment": "vip", "monthly_value": 999.0},
    {"customer_id": 3, "signup_at": ts("2025-06-01 12:00"), "segment": None, "monthly_value": None},
    {"customer_id": 4},
    {"customer_id": 5},
]


def test_commercial_features_and_subscription_population() -> None:
    sources = make_sources(customers=CUSTOMERS, subscriptions=SUBSCRIPTIONS)
    frame = build_features(sources, [SNAPSHOT], CONFIG, [])
    assert frame.collect()["customer_id"].to_list() == [1, 2, 3, 4, 5]
    assert_values(
        one_row(frame, 1),
        {
            "tenure_days": 424.0,
            "current_mrr": 20.0,
            "plan": "basic",
            "plan_downgrades_30d": 0.0,
            "plan_downgrades_90d": 1.0,
            "segment": "smb",
            "customer_value": 80.0,
        },
    )
    # signed up only after the snapshot: nothing about the customer is known yet
    assert_values(one_row(frame, 2), {"tenure_days": None, "segment": None, "customer_value": None})
    assert_values(
        one_row(frame, 3),
        {"tenure_days": 272.5, "current_mrr": 40.0, "plan": "addon", "segment": None},
    )


def test_population_by_subscription_and_by_inactivity() -> None:
    sources = make_sources(
        customers=CUSTOMERS,
        subscriptions=SUBSCRIPTIONS,
        activity=[
            event("2026-02-28", "login", customer_id=7),
            event("2026-01-30 00:00", "login", customer_id=8),  # 30 days before
            event("2026-01-29 23:00", "login", customer_id=9),  # just too early
            event("2026-03-01 00:00", "login", customer_id=10),  # at the cutoff
        ],
    )
    by_subscription = population(sources, [SNAPSHOT, date(2026, 1, 5)], CONFIG).collect()
    assert by_subscription.schema == pl.Schema(
        {"snapshot_date": pl.Date(), "customer_id": pl.Int64()}
    )
    assert by_subscription.rows() == [
        (date(2026, 1, 5), 1),
        (date(2026, 1, 5), 2),
        (date(2026, 1, 5), 3),
        (date(2026, 1, 5), 4),
        (date(2026, 1, 5), 5),
        (SNAPSHOT, 1),
        (SNAPSHOT, 2),
        (SNAPSHOT, 3),
        (SNAPSHOT, 4),
        (SNAPSHOT, 5),
    ]
    inactivity = FeatureConfig(label_kind="inactivity", inactivity_days=30)
    assert population(sources, [SNAPSHOT], inactivity).collect()["customer_id"].to_list() == [
        7,
        8,
    ]
    features = build_features(sources, [SNAPSHOT], inactivity, ["login"]).collect()
    assert features["customer_id"].to_list() == [7, 8]
    assert features["current_mrr"].to_list() == [None, None]


# -- time zones, many snapshots, shape ---------------------------------------------------------


def test_cutoff_and_windows_follow_the_configured_time_zone() -> None:
    new_york = FeatureConfig(timezone="America/New_York")
    d = date(2026, 3, 9)  # cutoff 04:00 UTC (EDT); 7 days before: 2026-03-02 05:00 UTC (EST)
    sources = make_sources(
        subscriptions=subscribed(1),
        interactions=[
            interaction("2026-03-09 03:59:59", "query", "email"),
            interaction("2026-03-09 04:00", "query", "email"),
            interaction("2026-03-02 05:00", "query", "email"),
            interaction("2026-03-02 04:59:59", "query", "email"),
        ],
    )
    row = one_row(build_features(sources, [d], new_york, []), d=d)
    assert row["contacts_7d"] == 2.0
    assert row["contacts_30d"] == 3.0
    assert row["days_since_last_contact"] == pytest.approx(1 / 86400)
    utc_row = one_row(build_features(sources, [d], CONFIG, []), d=d)
    # UTC: cutoff 2026-03-09 00:00, so both rows of that day are out, both of 03-02 in
    assert utc_row["contacts_7d"] == 2.0
    assert utc_row["days_since_last_contact"] == pytest.approx(6 + 19 / 24)


def test_many_snapshots_equal_one_build_per_snapshot() -> None:
    sources = make_sources(
        customers=CUSTOMERS,
        subscriptions=SUBSCRIPTIONS,
        interactions=INTERACTIONS,
        activity=ACTIVITY,
    )
    snapshots = [date(2026, 3, 2), date(2025, 12, 15), SNAPSHOT, date(2026, 1, 20), SNAPSHOT]
    together = build_features(sources, snapshots, CONFIG, ["login", "order"]).collect()
    apart = pl.concat(
        [
            build_features(sources, [d], CONFIG, ["login", "order"]).collect()
            for d in sorted(set(snapshots))
        ]
    )
    assert together.equals(apart)
    assert together["snapshot_date"].unique().len() == 4


def test_output_columns_order_and_types() -> None:
    sources = make_sources(subscriptions=subscribed(1), interactions=INTERACTIONS)
    frame = build_features(sources, [SNAPSHOT], CONFIG, ["login", "Page View"])
    schema = frame.collect_schema()
    assert list(schema)[:2] == ["snapshot_date", "customer_id"]
    assert list(schema)[2:] == feature_columns(["login", "Page View"]) + helper_columns()
    assert schema == feature_schema(["login", "Page View"])
    assert frame.collect().schema == schema


# -- inputs and config -------------------------------------------------------------------------


def test_source_frame_converts_time_zones_and_names_bad_input() -> None:
    sources = make_sources(subscriptions=subscribed(1))
    berlin = sources["subscriptions"].with_columns(
        pl.col("started_at").dt.convert_time_zone("Europe/Berlin").dt.cast_time_unit("ms")
    )
    converted = source_frame({**sources, "subscriptions": berlin}, "subscriptions").collect()
    assert converted.schema["started_at"] == pl.Datetime("us", "UTC")
    assert converted["started_at"][0] == ts("2025-06-01")

    with pytest.raises(ValueError, match="'interactions' is missing"):
        source_frame({"customers": sources["customers"]}, "interactions")
    with pytest.raises(ValueError, match=r"'subscriptions' lacks column\(s\): mrr"):
        source_frame({"subscriptions": sources["subscriptions"].drop("mrr")}, "subscriptions")
    naive = sources["subscriptions"].with_columns(pl.col("started_at").dt.replace_time_zone(None))
    with pytest.raises(ValueError, match=r"subscriptions\.started_at must be a time-zone aware"):
        source_frame({"subscriptions": naive}, "subscriptions")


def test_feature_config_validation_and_settings() -> None:
    with pytest.raises(ValueError, match="shorter than the longest feature window"):
        FeatureConfig(lookback_days=30)
    with pytest.raises(ValueError, match="unknown time zone"):
        FeatureConfig(timezone="Mars/Olympus")
    settings = Settings(
        timezone="Europe/Berlin",
        public_channels=("Twitter", "tiktok"),
        lookback_days=120,
        label_kind="inactivity",
        horizon_days=60,
    )
    config = FeatureConfig.from_settings(settings)
    assert config == FeatureConfig(
        timezone="Europe/Berlin",
        public_channels=("twitter", "tiktok"),
        lookback_days=120,
        max_event_types=12,
        label_kind="inactivity",
        inactivity_days=30,
        horizon_days=60,
    )


def test_snapshot_dates_must_be_dates() -> None:
    sources = make_sources(subscriptions=subscribed(1))
    with pytest.raises(ValueError, match="no snapshot dates"):
        build_features(sources, [], CONFIG, [])
    with pytest.raises(TypeError, match=r"datetime\.date"):
        build_features(sources, [datetime(2026, 3, 1, tzinfo=UTC)], CONFIG, [])


def test_open_complaints_count_however_old_they_are() -> None:
    old = interaction("2025-10-01", "complaint", "email")
    resolved_before = interaction("2025-09-01", "complaint", "email", resolved_at="2026-02-01")
    resolved_after = interaction("2025-08-01", "complaint", "phone", resolved_at="2026-03-01")
    old_query = interaction("2025-07-01", "query", "email")
    sources = make_sources(
        subscriptions=subscribed(1),
        interactions=[old, resolved_before, resolved_after, old_query],
    )
    for config in (CONFIG, FeatureConfig(lookback_days=180)):
        row = one_row(build_features(sources, [SNAPSHOT], config, []))
        assert row["open_complaints"] == 2.0  # old and resolved_after, not the query
        assert row["complaints_90d"] == 0.0
        assert row["oldest_open_complaint_days"] == 212.0  # resolved_after, 2025-08-01
        assert row["contacts_90d"] == 0.0
        if config.lookback_days == 90:
            assert row["days_since_last_contact"] is None  # only counts the lookback period


def test_open_complaints_of_many_snapshots_at_once() -> None:
    complaint = interaction("2025-06-01", "complaint", "email", resolved_at="2026-02-15")
    sources = make_sources(
        subscriptions=subscribed(1, since="2025-01-01"), interactions=[complaint]
    )
    snapshots = [date(2025, 6, 1), date(2025, 7, 1), date(2026, 1, 1), date(2026, 3, 1)]
    frame = build_features(sources, snapshots, CONFIG, []).collect()
    counts = dict(frame.select("snapshot_date", "open_complaints").iter_rows())
    assert counts == {
        date(2025, 6, 1): 0.0,  # opened at the cutoff: not yet known
        date(2025, 7, 1): 1.0,  # in the lookback period
        date(2026, 1, 1): 1.0,  # opened long before, still open
        date(2026, 3, 1): 0.0,  # resolved before the cutoff
    }


@pytest.mark.parametrize("n", [1, 2, 3, 11, 12, 25])
def test_p90_matches_linear_interpolation(n: int) -> None:
    import numpy as np

    hours = [((i * 37) % 23) + i / 7 for i in range(n)]  # unsorted, distinct
    rows = [
        interaction(
            f"2026-02-{1 + i % 27:02d} {i % 20:02d}:00",
            "query",
            "email",
            first_response_at=None,
        )
        for i in range(n)
    ]
    for row, h in zip(rows, hours, strict=True):
        row["first_response_at"] = row["opened_at"] + timedelta(hours=h)
    sources = make_sources(subscriptions=subscribed(1, 2), interactions=rows)
    frame = build_features(sources, [SNAPSHOT], CONFIG, [])
    assert one_row(frame)["first_response_hours_p90_90d"] == pytest.approx(
        float(np.percentile(hours, 90))
    )
    assert one_row(frame, customer_id=2)["first_response_hours_p90_90d"] is None


def test_days_since_last_activity_counts_from_the_second_of_the_last_event() -> None:
    sources = make_sources(
        subscriptions=subscribed(1, 2),
        activity=[
            event("2026-02-28 12:00:00.900", "login"),
            event("2026-02-28 12:00:00.200", "order"),
            event("2026-02-28 23:59:59.999999", "login", customer_id=2),
            event("2026-03-01 00:00:00.000001", "login", customer_id=2),
        ],
    )
    frame = build_features(sources, [SNAPSHOT], CONFIG, ["login", "order"])
    assert one_row(frame)["days_since_last_activity"] == 0.5
    assert one_row(frame, customer_id=2)["days_since_last_activity"] == pytest.approx(1 / 86400)
    assert one_row(frame, customer_id=2)["activity_events_7d"] == 1.0
