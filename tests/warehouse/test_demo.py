"""The demo warehouse: contract-exact, deterministic, plausible, causal, and loadable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from warehouse.db import engine_for
from warehouse.demo import (
    WarehouseNotEmptyError,
    generate_demo,
    load_demo,
    monthly_churn_rates,
    warehouse_summary,
)
from warehouse.migrate import create_source_tables
from warehouse.schema import SOURCE_TABLES, build_warehouse, contract_schema
from warehouse.settings import Settings

END = date(2026, 6, 1)
DAYS = 180
START = datetime(END.year, END.month, END.day, tzinfo=UTC) - timedelta(days=DAYS)
STOP = datetime(END.year, END.month, END.day, tzinfo=UTC)
MONTH = timedelta(days=30)

Frames = dict[str, pl.DataFrame]


@pytest.fixture(scope="module")
def demo() -> Frames:
    return generate_demo(3_000, DAYS, seed=11, end=END)


@pytest.fixture
def engine_of(
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[..., tuple[sa.Engine, Settings]]]:
    engines: list[sa.Engine] = []

    def _make(url: str, **overrides: object) -> tuple[sa.Engine, Settings]:
        settings = make_settings(url, **overrides)
        engines.append(engine_for(settings))
        return engines[-1], settings

    yield _make
    for engine in engines:
        engine.dispose()


def subscribed_at(subscriptions: pl.DataFrame, moment: datetime) -> pl.Series:
    covering = (pl.col("started_at") <= moment) & (
        pl.col("ended_at").is_null() | (pl.col("ended_at") > moment)
    )
    return subscriptions.filter(covering).get_column("customer_id").unique()


# -- shape and determinism -------------------------------------------------------------------------


def test_frames_have_exactly_the_contract_schema(demo: Frames) -> None:
    assert list(demo) == list(SOURCE_TABLES)
    for name, frame in demo.items():
        assert frame.schema == contract_schema(name), name
        assert frame.height > 0, name
    assert demo["customers"].height == 3_000


def test_same_seed_same_frames_other_seed_other_frames(demo: Frames) -> None:
    again = generate_demo(3_000, DAYS, seed=11, end=END)
    for name in SOURCE_TABLES:
        assert again[name].equals(demo[name]), name
    other = generate_demo(3_000, DAYS, seed=12, end=END)
    assert not other["interactions"].equals(demo["interactions"])
    assert not other["activity"].equals(demo["activity"])


def test_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="n_customers"):
        generate_demo(0, 30, seed=1, end=END)
    with pytest.raises(ValueError, match="days"):
        generate_demo(10, 0, seed=1, end=END)


def test_ids_unique_and_every_row_has_a_known_customer(demo: Frames) -> None:
    customers = demo["customers"]
    assert customers["customer_id"].is_unique().all()
    assert demo["interactions"]["interaction_id"].is_unique().all()
    known = customers["customer_id"].implode()
    for name in ("subscriptions", "interactions", "activity", "retention_contacts"):
        assert demo[name]["customer_id"].is_in(known).all(), name
    assert customers["customer_id"].is_in(demo["subscriptions"]["customer_id"].implode()).all()


def test_no_nulls_where_the_contract_forbids_them(demo: Frames) -> None:
    table_nulls = {
        "customers": ["customer_id", "signup_at", "segment", "country", "monthly_value"],
        "subscriptions": ["customer_id", "started_at", "plan", "mrr"],
        "interactions": ["interaction_id", "customer_id", "opened_at", "channel", "kind"],
        "activity": ["customer_id", "occurred_at", "event_type"],
        "retention_contacts": ["customer_id", "contacted_at"],
    }
    for name, columns in table_nulls.items():
        counts = demo[name].select(pl.col(columns).null_count()).row(0)
        assert counts == (0,) * len(columns), name


# -- time ------------------------------------------------------------------------------------------


def test_events_lie_inside_the_history_and_answers_follow_questions(demo: Frames) -> None:
    interactions = demo["interactions"]
    assert interactions["opened_at"].min() >= START  # type: ignore[operator]
    assert interactions["opened_at"].max() < STOP  # type: ignore[operator]
    out_of_order = interactions.filter(
        (pl.col("first_response_at") < pl.col("opened_at"))
        | (pl.col("first_response_at") >= STOP)
        | (pl.col("resolved_at") < pl.col("opened_at"))
        | (pl.col("resolved_at") < pl.col("first_response_at"))
        | (pl.col("resolved_at") >= STOP)
        | (pl.col("resolved_at").is_not_null() & pl.col("first_response_at").is_null())
    )
    assert out_of_order.height == 0
    for name, column in (("activity", "occurred_at"), ("retention_contacts", "contacted_at")):
        moments = demo[name][column]
        assert moments.min() >= START, name  # type: ignore[operator]
        assert moments.max() < STOP, name  # type: ignore[operator]

    subscriptions = demo["subscriptions"].join(
        demo["customers"].select("customer_id", "signup_at"), on="customer_id"
    )
    bad_periods = subscriptions.filter(
        (pl.col("started_at") < pl.col("signup_at"))
        | (pl.col("started_at") >= STOP)
        | (pl.col("ended_at") <= pl.col("started_at"))
        | (pl.col("ended_at") >= STOP)
    )
    assert bad_periods.height == 0
    assert (demo["customers"]["signup_at"] < START).mean() > 0.5  # type: ignore[operator]
    assert (demo["customers"]["signup_at"] >= START).sum() > 0


def test_subscription_periods_of_a_customer_never_overlap(demo: Frames) -> None:
    periods = demo["subscriptions"].sort("customer_id", "started_at")
    previous = periods.with_columns(
        previous_end=pl.col("ended_at").shift(1).over("customer_id"),
        previous_start=pl.col("started_at").shift(1).over("customer_id"),
    ).filter(pl.col("previous_start").is_not_null())
    assert previous["previous_end"].null_count() == 0
    assert (previous["started_at"] >= previous["previous_end"]).all()


def test_interactions_and_activity_happen_while_subscribed(demo: Frames) -> None:
    periods = demo["subscriptions"].select("customer_id", "started_at", "ended_at")
    for name, column in (("interactions", "opened_at"), ("activity", "occurred_at")):
        events = demo[name].select("customer_id", column).with_row_index("event")
        covered = (
            events.join(periods, on="customer_id")
            .filter(
                (pl.col(column) >= pl.col("started_at"))
                & (pl.col("ended_at").is_null() | (pl.col(column) < pl.col("ended_at")))
            )
            .get_column("event")
            .n_unique()
        )
        assert covered == events.height, name


# -- plausibility ----------------------------------------------------------------------------------


def test_the_data_has_the_variety_of_a_real_warehouse(demo: Frames) -> None:
    interactions = demo["interactions"]
    assert set(interactions["channel"]) == {
        "phone", "email", "chat", "web", "store", "twitter", "facebook", "instagram",
    }  # fmt: skip
    assert set(interactions["kind"]) == {"complaint", "query", "request", "praise"}
    public = interactions["channel"].is_in(["twitter", "facebook", "instagram"])
    assert (interactions["is_public"] == public).all()
    assert interactions["transfers"].min() == 0
    assert interactions["transfers"].max() >= 2  # type: ignore[operator]
    assert interactions["reopened"].any()
    csat = interactions["csat"]
    assert 0.3 < csat.null_count() / csat.len() < 0.95
    assert set(csat.drop_nulls()) == {1, 2, 3, 4, 5}

    unanswered = interactions.group_by("is_public").agg(
        pl.col("first_response_at").is_null().mean()
    )
    share = dict(zip(unanswered["is_public"], unanswered["first_response_at"], strict=True))
    assert share[True] > 3 * share[False] > 0
    complaints = interactions.filter(pl.col("kind") == "complaint")
    assert complaints["resolved_at"].null_count() > 0
    late = (pl.col("resolved_at") - pl.col("opened_at")) > timedelta(days=7)
    assert complaints.filter(late).height > 0

    activity = demo["activity"]
    assert {"login", "order", "refund", "support_visit"} <= set(activity["event_type"])
    assert activity["event_type"].n_unique() >= 6
    valued = activity.group_by("event_type").agg(pl.col("value").is_not_null().all())
    has_value = dict(zip(valued["event_type"], valued["value"], strict=True))
    assert has_value["order"] and has_value["refund"] and not has_value["login"]

    customers = demo["customers"]
    assert set(customers["segment"]) == {"consumer", "smb", "enterprise"}
    value = customers.group_by("segment").agg(pl.col("monthly_value").median())
    median = dict(zip(value["segment"], value["monthly_value"], strict=True))
    assert median["consumer"] < median["smb"] < median["enterprise"]
    assert customers["country"].n_unique() > 3
    assert customers["language"].n_unique() > 3

    assert demo["retention_contacts"]["outcome"].n_unique() >= 3


def test_plans_change_and_former_customers_come_back(demo: Frames) -> None:
    periods = demo["subscriptions"].sort("customer_id", "started_at")
    steps = periods.with_columns(
        previous_end=pl.col("ended_at").shift(1).over("customer_id"),
        previous_mrr=pl.col("mrr").shift(1).over("customer_id"),
        previous_plan=pl.col("plan").shift(1).over("customer_id"),
    ).filter(pl.col("previous_end").is_not_null())
    changes = steps.filter(pl.col("started_at") == pl.col("previous_end"))
    assert (changes["plan"] != changes["previous_plan"]).all()
    assert changes.filter(pl.col("mrr") < pl.col("previous_mrr")).height > 0  # downgrades
    assert changes.filter(pl.col("mrr") > pl.col("previous_mrr")).height > 0  # upgrades
    returns = steps.filter(pl.col("started_at") - pl.col("previous_end") > timedelta(days=28))
    assert returns.filter(pl.col("started_at") >= START).height > 0


def test_monthly_churn_rates_on_a_literal_history() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    subscriptions = pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 3, 4, 5],
            "started_at": [t, t, t, t + timedelta(days=20), t + timedelta(days=40), t],
            "ended_at": [None, t + timedelta(days=10), t + timedelta(days=20), None, None, t],
        },
        schema={
            "customer_id": pl.Int64,
            "started_at": pl.Datetime("us", "UTC"),
            "ended_at": pl.Datetime("us", "UTC"),
        },
    )
    rates = monthly_churn_rates(subscriptions, date(2026, 1, 1), date(2026, 3, 1))
    # January: 1, 2, 3 subscribed; 2 left (3 changed plan without a gap). February: 1, 3, 4.
    assert rates == {"2026-01": pytest.approx(1 / 3), "2026-02": 0.0}
    # Only months that start and end inside the range count.
    assert monthly_churn_rates(subscriptions, date(2026, 1, 2), date(2026, 3, 1)) == {
        "2026-02": 0.0
    }
    assert list(monthly_churn_rates(subscriptions, date(2026, 1, 1), date(2026, 1, 31))) == []
    assert list(monthly_churn_rates(subscriptions, date(2026, 1, 1), date(2026, 2, 1))) == [
        "2026-01"
    ]


def test_monthly_churn_among_subscribers_is_plausible(demo: Frames) -> None:
    rates = monthly_churn_rates(demo["subscriptions"], START.date(), END)
    assert len(rates) >= 5
    assert all(0.005 <= rate <= 0.08 for rate in rates.values()), rates
    assert 0.015 <= sum(rates.values()) / len(rates) <= 0.05, rates


# -- the signal ------------------------------------------------------------------------------------


def test_bad_complaint_experiences_raise_next_month_churn(demo: Frames) -> None:
    interactions, subscriptions = demo["interactions"], demo["subscriptions"]
    flagged_total = flagged_left = other_total = other_left = 0
    month_start = START + MONTH
    while month_start + MONTH <= STOP:
        recent = interactions.filter(
            (pl.col("opened_at") < month_start) & (pl.col("opened_at") >= month_start - MONTH)
        )
        open_complaint = (pl.col("kind") == "complaint") & (
            pl.col("resolved_at").is_null() | (pl.col("resolved_at") > month_start)
        )
        unanswered_public = pl.col("is_public") & (
            pl.col("first_response_at").is_null() | (pl.col("first_response_at") > month_start)
        )
        flagged = recent.filter(open_complaint | unanswered_public)["customer_id"].implode()
        before = subscribed_at(subscriptions, month_start)
        left = ~before.is_in(subscribed_at(subscriptions, month_start + MONTH).implode())
        is_flagged = before.is_in(flagged)
        flagged_total += int(is_flagged.sum())
        flagged_left += int((is_flagged & left).sum())
        other_total += int((~is_flagged).sum())
        other_left += int((~is_flagged & left).sum())
        month_start += MONTH
    assert flagged_total > 100 and other_total > 1_000
    flagged_rate = flagged_left / flagged_total
    other_rate = other_left / other_total
    assert flagged_rate / other_rate > 1.5, (flagged_rate, other_rate)


def test_activity_declines_in_the_weeks_before_churn(demo: Frames) -> None:
    last_end = (
        demo["subscriptions"]
        .group_by("customer_id")
        .agg(pl.col("ended_at").max(), pl.col("ended_at").null_count().alias("open_rows"))
    )
    churned = last_end.filter(
        (pl.col("open_rows") == 0) & (pl.col("ended_at") >= START + timedelta(weeks=13))
    ).select("customer_id", "ended_at")
    assert churned.height > 100
    weeks_before = (
        demo["activity"]
        .join(churned, on="customer_id")
        .select(
            weeks=(pl.col("ended_at") - pl.col("occurred_at")).dt.total_seconds(fractional=True)
            / timedelta(weeks=1).total_seconds()
        )["weeks"]
    )
    last_four = int(((weeks_before >= 0) & (weeks_before < 4)).sum())
    weeks_eight_to_twelve = int(((weeks_before >= 8) & (weeks_before < 12)).sum())
    assert last_four < 0.85 * weeks_eight_to_twelve, (last_four, weeks_eight_to_twelve)


# -- loading ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_demo() -> Frames:
    return generate_demo(300, 60, seed=5, end=END)


def test_load_round_trips_row_counts_and_refuses_a_second_load(
    warehouse_url: str,
    engine_of: Callable[..., tuple[sa.Engine, Settings]],
    small_demo: Frames,
) -> None:
    engine, settings = engine_of(warehouse_url)
    wh = build_warehouse(settings)
    expected = {name: frame.height for name, frame in small_demo.items()}

    assert load_demo(engine, wh, small_demo) == expected
    with engine.connect() as conn:
        for name, table in wh.sources.items():
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            assert count == expected[name], name

    summary = warehouse_summary(engine, wh)
    assert summary["rows"] == expected
    assert summary["history_from"] >= (END - timedelta(days=60)).isoformat()
    assert summary["history_to"] < END.isoformat()
    assert summary["subscribed_at_end"] > 0
    assert summary["monthly_churn"]
    assert 0 <= summary["mean_monthly_churn"] < 0.2

    with pytest.raises(WarehouseNotEmptyError, match=r"customers \(300 rows\)"):
        load_demo(engine, wh, small_demo)
    assert warehouse_summary(engine, wh)["rows"] == expected


def test_load_uses_configured_table_names(
    sqlite_url: str, engine_of: Callable[..., tuple[sa.Engine, Settings]], small_demo: Frames
) -> None:
    engine, settings = engine_of(sqlite_url, tables={"interactions": "crm_contacts"})
    wh = build_warehouse(settings)
    load_demo(engine, wh, small_demo)
    assert "crm_contacts" in sa.inspect(engine).get_table_names()
    assert (
        warehouse_summary(engine, wh)["rows"]["interactions"] == small_demo["interactions"].height
    )


def test_load_refuses_when_any_source_table_has_rows(
    sqlite_url: str, engine_of: Callable[..., tuple[sa.Engine, Settings]], small_demo: Frames
) -> None:
    engine, settings = engine_of(sqlite_url)
    wh = build_warehouse(settings)
    create_source_tables(engine, wh)
    contact = {"customer_id": 1, "contacted_at": START, "outcome": "no_answer"}
    with engine.begin() as conn:
        conn.execute(wh["retention_contacts"].insert().values(**contact))
    with pytest.raises(WarehouseNotEmptyError, match=r"retention_contacts \(1 rows\)"):
        load_demo(engine, wh, small_demo)
    assert warehouse_summary(engine, wh)["rows"]["customers"] == 0


def test_load_rejects_frames_off_contract(
    sqlite_url: str, engine_of: Callable[..., tuple[sa.Engine, Settings]], small_demo: Frames
) -> None:
    engine, settings = engine_of(sqlite_url)
    wh = build_warehouse(settings)
    broken = dict(small_demo)
    broken["activity"] = small_demo["activity"].with_columns(pl.col("value").cast(pl.String))
    with pytest.raises(ValueError, match=r"activity \(\d+ rows\).*value \(String instead of"):
        load_demo(engine, wh, broken)
    missing = {k: v for k, v in small_demo.items() if k != "customers"}
    with pytest.raises(ValueError, match="customers"):
        load_demo(engine, wh, missing)
    assert not sa.inspect(engine).get_table_names()


def test_summary_of_an_empty_warehouse(
    sqlite_url: str, engine_of: Callable[..., tuple[sa.Engine, Settings]]
) -> None:
    engine, settings = engine_of(sqlite_url)
    wh = build_warehouse(settings)
    create_source_tables(engine, wh)
    summary = warehouse_summary(engine, wh)
    assert summary["rows"] == dict.fromkeys(SOURCE_TABLES, 0)
    assert summary["history_from"] is None
    assert summary["monthly_churn"] == {}


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(frame.columns, nulls_last=True)


def test_the_same_seed_loads_the_same_warehouse_with_a_realistic_churn_rate(
    warehouse_url: str, engine_of: Callable[..., tuple[sa.Engine, Settings]]
) -> None:
    from warehouse.extract import extract

    engine, settings = engine_of(warehouse_url)
    wh = build_warehouse(settings)
    load_demo(engine, wh, generate_demo(1500, 240, seed=21, end=END))
    again = generate_demo(1500, 240, seed=21, end=END)
    other_seed = generate_demo(1500, 240, seed=22, end=END)

    loaded = extract(engine, wh, window_start=datetime(2000, 1, 1, tzinfo=UTC), window_end=None)
    for name in SOURCE_TABLES:
        assert _sorted(loaded.frames()[name]).equals(_sorted(again[name])), name
    assert not _sorted(other_seed["interactions"]).equals(_sorted(again["interactions"]))

    summary = warehouse_summary(engine, wh)
    assert len(summary["monthly_churn"]) >= 5
    assert 0.01 <= summary["mean_monthly_churn"] <= 0.06, summary["monthly_churn"]
