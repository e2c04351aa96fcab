"""The churn features in plain pandas, one snapshot at a time: the benchmark's reference.

Same definitions and output columns as :func:`features.build.build_features` (see
docs/features.md), written the straightforward way: for each snapshot date, filter each
table to what was known before the cutoff, then ``groupby("customer_id")`` per feature.
Verified equal to the Polars build in ``tests/features/test_pandas_reference.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.build import FeatureConfig, snapshot_cutoff
from features.registry import (
    FEATURES,
    HELPERS,
    LONGEST_WINDOW_DAYS,
    LOW_CSAT_MAX,
    REPEAT_CONTACT_DAYS,
    WINDOWS,
    event_type_features,
    event_type_slug,
    feature_schema,
)

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0


def _hours(elapsed: pd.Series) -> pd.Series:
    seconds: pd.Series = elapsed.dt.total_seconds()
    return seconds / SECONDS_PER_HOUR


def _days(elapsed: pd.Series) -> pd.Series:
    seconds: pd.Series = elapsed.dt.total_seconds()
    return seconds / SECONDS_PER_DAY


def _cutoff(d: date, config: FeatureConfig, days_before: int = 0) -> pd.Timestamp:
    return pd.Timestamp(snapshot_cutoff(d - timedelta(days=days_before), config.timezone))


def _prepare_interactions(frame: pd.DataFrame, config: FeatureConfig) -> pd.DataFrame:
    ix = frame.sort_values(["customer_id", "opened_at", "interaction_id"], kind="stable").copy()
    previous = ix.groupby("customer_id")["opened_at"].shift(1)
    ix["is_repeat"] = (ix["opened_at"] - previous) <= pd.Timedelta(days=REPEAT_CONTACT_DAYS)
    ix["is_complaint"] = ix["kind"] == "complaint"
    public = ix["is_public"].astype(bool) | ix["channel"].isin(list(config.public_channels))
    ix["is_public_complaint"] = ix["is_complaint"] & public
    return ix


def _prepare_subscriptions(frame: pd.DataFrame) -> pd.DataFrame:
    subs = frame.sort_values(
        ["customer_id", "started_at", "mrr", "plan"], kind="stable", na_position="last"
    ).copy()
    subs["order"] = subs.groupby("customer_id").cumcount()
    return subs


def _downgrades(subs: pd.DataFrame, started: pd.DataFrame, lookback_start: Any) -> pd.Series:
    """Per started subscription: MRR below the latest earlier one still running in the
    lookback period (ended at or after its start, or open)."""
    running = subs[subs["ended_at"].isna() | (subs["ended_at"] >= lookback_start)]
    pairs = started[["customer_id", "order", "mrr"]].merge(
        running[["customer_id", "order", "mrr"]], on="customer_id", suffixes=("", "_previous")
    )
    pairs = pairs[pairs["order_previous"] < pairs["order"]].sort_values("order_previous")
    previous = pairs.groupby(["customer_id", "order"])["mrr_previous"].last()
    index = pd.MultiIndex.from_frame(started[["customer_id", "order"]])
    mrr = started["mrr"].to_numpy(dtype=float, na_value=np.nan)
    previous_mrr = previous.reindex(index).to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        lower = mrr < previous_mrr  # NaN on either side: not a downgrade
    return pd.Series(lower, index=started.index)


def _count(mask: pd.Series, by: pd.Series) -> pd.Series:
    return mask.fillna(False).astype(float).groupby(by).sum()


def _label_at(values: pd.Series, labels: pd.Series, by: pd.Series, *, largest: bool) -> pd.Series:
    frame = pd.DataFrame({"customer_id": by, "value": values, "label": labels}).dropna(
        subset=["value"]
    )
    frame = frame.sort_values(
        ["customer_id", "value", "label"], ascending=[True, not largest, True], kind="stable"
    )
    return frame.groupby("customer_id")["label"].first()


def _interaction_features(ix: pd.DataFrame, d: date, config: FeatureConfig) -> dict[str, pd.Series]:
    cutoff = _cutoff(d, config)
    ix = ix[ix["opened_at"] < cutoff]
    # Older complaints still open at the cutoff count as open complaints, nothing else.
    in_lookback = ix["opened_at"] >= _cutoff(d, config, config.lookback_days)
    still_open = ix["is_complaint"] & ~(ix["resolved_at"] < cutoff).fillna(False).astype(bool)
    ix = ix[in_lookback | still_open]
    in_lookback = in_lookback[ix.index]
    by = ix["customer_id"]
    window = {w: ix["opened_at"] >= _cutoff(d, config, w) for w in WINDOWS}
    answered = (ix["first_response_at"] < cutoff).fillna(False).astype(bool)
    resolved = (ix["resolved_at"] < cutoff).fillna(False).astype(bool)
    response = _hours(ix["first_response_at"] - ix["opened_at"]).where(answered)
    resolution = _hours(ix["resolved_at"] - ix["opened_at"]).where(resolved)
    transfers = ix["transfers"].astype(float).where(resolved)
    csat = ix["csat"].astype(float).where(resolved)
    reopened = ix["reopened"].astype(bool) & resolved
    complaint = ix["is_complaint"]
    public = ix["is_public_complaint"]
    open_complaint = complaint & ~resolved
    waited_days = _days(cutoff - ix["opened_at"])

    out: dict[str, pd.Series] = {
        "open_complaints": _count(open_complaint, by),
        "oldest_open_complaint_days": waited_days.where(open_complaint).groupby(by).max(),
    }
    for w in WINDOWS:
        out[f"complaints_{w}d"] = _count(complaint & window[w], by)
    for w in (30, 90):
        out[f"reopened_complaints_{w}d"] = _count(complaint & reopened & window[w], by)
    for w in WINDOWS:
        answered_hours = response.where(window[w]).groupby(by)
        out[f"first_response_hours_mean_{w}d"] = answered_hours.mean()
        out[f"first_response_hours_max_{w}d"] = answered_hours.max()
        if w == LONGEST_WINDOW_DAYS:
            out[f"first_response_hours_p90_{w}d"] = answered_hours.quantile(0.9)
    for hours in (10, 24):
        for w in WINDOWS:
            out[f"answered_after_{hours}h_{w}d"] = _count(window[w] & (response > hours), by)
    for w in WINDOWS:
        out[f"unanswered_contacts_{w}d"] = _count(window[w] & ~answered, by)
    out["longest_unanswered_wait_hours_30d"] = (
        (waited_days * 24).where(window[30] & ~answered).groupby(by).max()
    )
    out["resolution_hours_mean_30d"] = resolution.where(window[30]).groupby(by).mean()
    out["resolution_hours_mean_90d"] = resolution.where(window[90]).groupby(by).mean()
    out["resolution_hours_max_90d"] = resolution.where(window[90]).groupby(by).max()
    for w in WINDOWS:
        out[f"public_complaints_{w}d"] = _count(public & window[w], by)
    for w in (30, 90):
        out[f"public_complaints_unanswered_{w}d"] = _count(public & window[w] & ~answered, by)
    public_response = response.where(public & window[90])
    out["public_first_response_hours_max_90d"] = public_response.groupby(by).max()
    for w in WINDOWS:
        out[f"contacts_{w}d"] = _count(window[w], by)
    for w in (30, 90):
        out[f"transfers_per_contact_{w}d"] = transfers.where(window[w]).groupby(by).mean()
    for w in (30, 90):
        out[f"repeat_contacts_{w}d"] = _count(ix["is_repeat"] & window[w], by)
    for w in (30, 90):
        out[f"csat_mean_{w}d"] = csat.where(window[w]).groupby(by).mean()
    for w in WINDOWS:
        out[f"low_csat_{w}d"] = _count(window[w] & (csat <= LOW_CSAT_MAX), by)
    out["days_since_last_contact"] = waited_days.where(in_lookback).groupby(by).min()
    out["slowest_public_channel_90d"] = _label_at(public_response, ix["channel"], by, largest=True)
    out["unanswered_public_channel_30d"] = _label_at(
        ix["opened_at"].where(public & window[30] & ~answered), ix["channel"], by, largest=False
    )
    return out


def _activity_features(
    activity: pd.DataFrame, d: date, config: FeatureConfig, event_types: Sequence[str]
) -> dict[str, pd.Series]:
    cutoff = _cutoff(d, config)
    act = activity[(activity["occurred_at"] >= _cutoff(d, config, config.lookback_days))]
    act = act[act["occurred_at"] < cutoff]
    by = act["customer_id"]
    window = {w: act["occurred_at"] >= _cutoff(d, config, w) for w in WINDOWS}
    prior = window[90] & ~window[30]
    out: dict[str, pd.Series] = {}
    for w in WINDOWS:
        out[f"activity_events_{w}d"] = _count(window[w], by)
    prior_per_30d = _count(prior, by) / 2
    trend = (out["activity_events_30d"] / prior_per_30d).where(prior_per_30d > 0)
    out["activity_trend_30d"] = trend
    out["activity_drop_30d"] = 1 - trend
    last_second = act["occurred_at"].dt.floor("s")
    out["days_since_last_activity"] = _days(cutoff - last_second).groupby(by).min()
    for event_type in event_types:
        slug = event_type_slug(event_type)
        of_type = act["event_type"] == event_type
        out[f"activity_{slug}_events_30d"] = _count(of_type & window[30], by)
        out[f"activity_{slug}_events_90d"] = _count(of_type & window[90], by)
        values = act["value"].astype(float).where(of_type & window[90])
        out[f"activity_{slug}_value_90d"] = values.fillna(0.0).groupby(by).sum()
    return out


def _population_and_commercial(
    frames: Mapping[str, pd.DataFrame], subs: pd.DataFrame, d: date, config: FeatureConfig
) -> pd.DataFrame:
    cutoff = _cutoff(d, config)
    covering = subs[
        (subs["started_at"] < cutoff) & (subs["ended_at"].isna() | (subs["ended_at"] >= cutoff))
    ]
    latest = covering.sort_values(
        ["customer_id", "started_at", "mrr", "plan"],
        ascending=[True, False, False, False],
        na_position="last",
        kind="stable",
    )
    commercial = pd.DataFrame(
        {
            "current_mrr": covering.groupby("customer_id")["mrr"].sum(min_count=1),
            "plan": latest.drop_duplicates("customer_id").set_index("customer_id")["plan"],
        }
    )
    if config.label_kind == "subscription":
        customers = commercial.index
    else:
        activity = frames["activity"]
        recent = activity[
            (activity["occurred_at"] >= _cutoff(d, config, config.inactivity_days))
            & (activity["occurred_at"] < cutoff)
        ]
        customers = pd.Index(recent["customer_id"].unique())
    frame = pd.DataFrame(index=pd.Index(np.sort(customers.to_numpy()), name="customer_id"))
    frame = frame.join(commercial, how="left")
    known = frames["customers"].set_index("customer_id")
    known = known[known["signup_at"] < cutoff]
    frame["tenure_days"] = _days(cutoff - known["signup_at"]).reindex(frame.index)
    frame["segment"] = known["segment"].reindex(frame.index)
    frame["customer_value"] = known["monthly_value"].reindex(frame.index)
    started = subs[
        (subs["started_at"] < cutoff)
        & (subs["started_at"] >= _cutoff(d, config, config.lookback_days))
    ]
    is_downgrade = _downgrades(subs, started, _cutoff(d, config, config.lookback_days))
    for w in (30, 90):
        in_window = started["started_at"] >= _cutoff(d, config, w)
        frame[f"plan_downgrades_{w}d"] = _count(
            is_downgrade & in_window, started["customer_id"]
        ).reindex(frame.index)
    return frame


def build_features_pandas(
    frames: Mapping[str, pd.DataFrame],
    snapshots: Sequence[date],
    config: FeatureConfig,
    event_types: Sequence[str],
) -> pd.DataFrame:
    """The feature frame of :func:`features.build.build_features`, computed in pandas."""
    schema = feature_schema(event_types)
    ix = _prepare_interactions(frames["interactions"], config)
    subs = _prepare_subscriptions(frames["subscriptions"])
    registry = (*FEATURES, *event_type_features(event_types), *HELPERS)
    defaults = {f.name: f.default for f in registry if f.default is not None}
    parts = []
    for d in sorted(set(snapshots)):
        frame = _population_and_commercial(frames, subs, d, config)
        for name, values in (
            _interaction_features(ix, d, config)
            | _activity_features(frames["activity"], d, config, event_types)
        ).items():
            frame[name] = values.reindex(frame.index)
        for name, default in defaults.items():
            frame[name] = frame[name].fillna(default)
        frame = frame.reset_index()
        frame.insert(0, "snapshot_date", d)
        parts.append(frame)
    result = pd.concat(parts, ignore_index=True)
    return result[list(schema)]
