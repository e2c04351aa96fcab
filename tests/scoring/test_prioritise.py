"""Prioritisation: value at risk, ranking, capacity, segment caps, cool-down, priority."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.prioritise import (
    DAYS_PER_MONTH,
    PrioritySettings,
    as_of_cutoff,
    cooled_down_customers,
    prioritise,
)
from warehouse.settings import Settings

NO_COOL_DOWN = pl.DataFrame(schema={"customer_id": pl.Int64})


def scored(
    ids: list[int],
    probability: list[float],
    value: list[float | None],
    segment: list[str | None] | None = None,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": ids,
            "churn_probability": probability,
            "segment": segment or ["a"] * len(ids),
            "customer_value": value,
        },
        schema={
            "customer_id": pl.Int64,
            "churn_probability": pl.Float64,
            "segment": pl.String,
            "customer_value": pl.Float64,
        },
    )


def test_value_at_risk_is_probability_times_value_over_the_horizon() -> None:
    frame = scored([1, 2, 3], [0.5, 0.2, 0.9], [100.0, None, 10.0])
    result = prioritise(frame, NO_COOL_DOWN, PrioritySettings(capacity=3, horizon_days=60))
    by_id = {r["customer_id"]: r for r in result.frame.iter_rows(named=True)}
    months = 60 / DAYS_PER_MONTH
    assert by_id[1]["value_at_risk"] == pytest.approx(0.5 * 100.0 * months)
    assert by_id[2]["value_at_risk"] == 0.0  # unknown value counts as 0
    assert by_id[2]["customer_value"] == 0.0
    assert by_id[3]["value_at_risk"] == pytest.approx(0.9 * 10.0 * months)


def test_ranking_by_value_at_risk_or_by_probability() -> None:
    frame = scored([1, 2, 3], [0.9, 0.3, 0.6], [10.0, 1000.0, 100.0])
    by_value = prioritise(frame, NO_COOL_DOWN, PrioritySettings(capacity=3))
    assert by_value.frame["customer_id"].to_list() == [2, 3, 1]
    by_probability = prioritise(
        frame, NO_COOL_DOWN, PrioritySettings(capacity=3, rank_by="probability")
    )
    assert by_probability.frame["customer_id"].to_list() == [1, 3, 2]
    assert by_probability.frame["rank"].to_list() == [1, 2, 3]


def test_ties_are_broken_deterministically_by_customer_id() -> None:
    frame = scored([30, 10, 20, 40], [0.5, 0.5, 0.5, 0.5], [10.0, 10.0, 10.0, 10.0])
    first = prioritise(frame, NO_COOL_DOWN, PrioritySettings(capacity=2))
    shuffled = prioritise(frame.reverse(), NO_COOL_DOWN, PrioritySettings(capacity=2))
    assert first.frame["customer_id"].to_list() == [10, 20, 30, 40]
    assert first.frame.equals(shuffled.frame)


def test_capacity_segment_caps_and_cool_down() -> None:
    frame = scored(
        [1, 2, 3, 4, 5, 6, 7],
        [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.3],
        [100.0] * 7,
        ["smb", "smb", "smb", "enterprise", "smb", None, "enterprise"],
    )
    cooled = pl.DataFrame({"customer_id": [2, 99]})  # 99 was not scored
    result = prioritise(frame, cooled, PrioritySettings(capacity=4, segment_capacity={"smb": 2}))
    listed = result.frame.filter("listed")["customer_id"].to_list()
    # 2 is cooled down; smb is capped at 2 (1 and 3); then 4, 6 (null segment: no cap).
    assert listed == [1, 3, 4, 6]
    assert result.n_listed == 4
    assert result.n_cooled_down == 1
    assert result.n_scored == 7
    assert result.frame.filter(pl.col("customer_id") == 2)["cooled_down"].item()
    assert result.listed_customer_ids.to_list() == [1, 3, 4, 6]
    assert result.warnings == []

    # A cap on a segment nobody has (a different spelling) limits nothing and says so.
    loose = prioritise(frame, cooled, PrioritySettings(capacity=4, segment_capacity={"SMB": 1}))
    assert loose.frame.filter("listed")["customer_id"].to_list() == [1, 3, 4, 5]
    assert loose.warnings == [
        "segment cap 'SMB' matches no scored customer (segments are compared exactly; "
        "tonight's segments: 'enterprise', 'smb')"
    ]


def test_priority_is_the_likelihood_against_the_mean_listed_or_not() -> None:
    # mean probability 0.1: high from 0.3, medium from 0.15
    probability = [0.35, 0.31, 0.16, 0.13, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0]
    value = [1.0, 1.0, 1.0, 1.0, 5000.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    frame = scored(list(range(1, 11)), probability, value)
    result = prioritise(frame, NO_COOL_DOWN, PrioritySettings(capacity=2))
    priority = dict(result.frame.select("customer_id", "priority").iter_rows())
    assert result.listed_customer_ids.to_list() == [5, 1]
    assert priority[1] == "high"  # listed
    assert priority[5] == "low"  # listed for its value, not its likelihood
    assert priority[2] == "high"  # not listed, still three times as likely as usual
    assert (priority[3], priority[4]) == ("medium", "low")
    assert {priority[i] for i in (6, 7, 8, 9, 10)} == {"low"}
    stricter = prioritise(frame, NO_COOL_DOWN, PrioritySettings(high_lift=4.0, medium_lift=2.0))
    levels = dict(stricter.frame.select("customer_id", "priority").iter_rows())
    assert (levels[1], levels[2], levels[3]) == ("medium", "medium", "low")


def test_priority_lifts_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="medium_lift <= high_lift"):
        PrioritySettings(high_lift=1.0, medium_lift=2.0)


def test_zero_capacity_lists_nobody_and_empty_input_is_fine() -> None:
    frame = scored([1, 2], [0.8, 0.3], [1.0, 1.0])
    assert prioritise(frame, NO_COOL_DOWN, PrioritySettings(capacity=0)).n_listed == 0
    empty = prioritise(frame.clear(), NO_COOL_DOWN, PrioritySettings())
    assert empty.n_scored == 0 and empty.frame.height == 0


def test_bad_scored_frames_are_refused_with_counts() -> None:
    with pytest.raises(ValueError, match="repeats in 1 row"):
        prioritise(scored([1, 1], [0.1, 0.2], [1.0, 1.0]), NO_COOL_DOWN, PrioritySettings())
    with pytest.raises(ValueError, match=r"outside \[0, 1\] in 1 row"):
        prioritise(scored([1, 2], [0.1, 1.2], [1.0, 1.0]), NO_COOL_DOWN, PrioritySettings())
    with pytest.raises(ValueError, match="lack column"):
        prioritise(pl.DataFrame({"customer_id": [1]}), NO_COOL_DOWN, PrioritySettings())
    with pytest.raises(ValueError, match="segment_capacity"):
        PrioritySettings(segment_capacity={"smb": -1})


def test_from_settings() -> None:
    config = PrioritySettings.from_settings(
        Settings(
            list_capacity=7,
            segment_capacity={"smb": 3},
            rank_by="probability",
            cooldown_days=5,
            horizon_days=45,
        )
    )
    assert config == PrioritySettings(
        capacity=7,
        segment_capacity={"smb": 3},
        rank_by="probability",
        cooldown_days=5,
        horizon_days=45,
    )


def test_cool_down_window_is_half_open_before_the_cutoff() -> None:
    cutoff = as_of_cutoff(date(2026, 11, 20), "Europe/Amsterdam")
    assert cutoff == datetime(2026, 11, 19, 23, 0, tzinfo=UTC)
    contacts = pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 4],
            "contacted_at": [
                cutoff - timedelta(days=14),  # first instant of the window: in
                cutoff - timedelta(days=14, microseconds=1),  # just before: out
                cutoff,  # the scoring day itself: out
                cutoff - timedelta(hours=1),  # in (twice)
                cutoff - timedelta(days=2),
            ],
        },
        schema={"customer_id": pl.Int64, "contacted_at": pl.Datetime("us", "UTC")},
    )
    zone = "Europe/Amsterdam"
    cooled = cooled_down_customers(contacts.lazy(), cutoff, 14, timezone=zone)
    assert cooled["customer_id"].to_list() == [1, 4]
    assert cooled_down_customers(contacts, cutoff, 0, timezone=zone).height == 0
    with pytest.raises(ValueError, match="time-zone aware"):
        cooled_down_customers(contacts, cutoff.replace(tzinfo=None), 14, timezone=zone)


def test_cool_down_window_starts_at_a_local_midnight_across_a_clock_change() -> None:
    """Berlin leaves summer time on 25 October 2026: 14 local days are 14 x 24 h + 1 h."""
    cutoff = as_of_cutoff(date(2026, 11, 5), "Europe/Berlin")
    assert cutoff == datetime(2026, 11, 4, 23, 0, tzinfo=UTC)
    start = datetime(2026, 10, 21, 22, 0, tzinfo=UTC)  # 22 October, 00:00 summer time
    contacts = pl.DataFrame(
        {
            "customer_id": [1, 2],
            "contacted_at": [start + timedelta(minutes=30), start - timedelta(microseconds=1)],
        },
        schema={"customer_id": pl.Int64, "contacted_at": pl.Datetime("us", "UTC")},
    )
    cooled = cooled_down_customers(contacts, cutoff, 14, timezone="Europe/Berlin")
    assert cooled["customer_id"].to_list() == [1]


def reference_listing(frame: pl.DataFrame, cooled: set[int], config: PrioritySettings) -> list[int]:
    """The listing rule walked one customer at a time."""
    taken: list[int] = []
    per_segment: dict[str | None, int] = {}
    for row in frame.sort("rank").iter_rows(named=True):
        segment = row["segment"]
        cap = config.segment_capacity.get(segment) if segment is not None else None
        if row["customer_id"] in cooled or len(taken) >= config.capacity:
            continue
        if cap is not None and per_segment.get(segment, 0) >= cap:
            continue
        per_segment[segment] = per_segment.get(segment, 0) + 1
        taken.append(row["customer_id"])
    return taken


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.one_of(st.none(), st.floats(0, 500)),
            st.sampled_from(["a", "b", "c", None]),
            st.booleans(),
        ),
        max_size=40,
    ),
    capacity=st.integers(0, 30),
    caps=st.dictionaries(st.sampled_from(["a", "b"]), st.integers(0, 10)),
    rank_by=st.sampled_from(["value_at_risk", "probability"]),
)
def test_listing_invariants(
    rows: list[tuple[float, float | None, str | None, bool]],
    capacity: int,
    caps: dict[str, int],
    rank_by: str,
) -> None:
    ids = [10 * i + 3 for i in range(len(rows))]
    frame = scored(ids, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
    cooled = {i for i, r in zip(ids, rows, strict=True) if r[3]}
    config = PrioritySettings(capacity=capacity, segment_capacity=caps, rank_by=rank_by)  # type: ignore[arg-type]
    result = prioritise(
        frame,
        pl.DataFrame({"customer_id": sorted(cooled)}, schema={"customer_id": pl.Int64}),
        config,
    )
    out = result.frame
    assert sorted(out["rank"].to_list()) == list(range(1, len(rows) + 1))
    assert sorted(out["customer_id"].to_list()) == sorted(ids)
    assert result.n_listed <= capacity
    assert not out.filter(pl.col("listed") & pl.col("cooled_down")).height
    for segment, cap in caps.items():
        assert out.filter(pl.col("listed") & (pl.col("segment") == segment)).height <= cap
    assert out.filter("listed").sort("rank")["customer_id"].to_list() == reference_listing(
        out, cooled, config
    )
    key = "value_at_risk" if rank_by == "value_at_risk" else "churn_probability"
    assert out[key].to_list() == sorted(out[key].to_list(), reverse=True)
