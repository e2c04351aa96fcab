"""Synthetic labelled snapshots with a planted churn signal, for the model tests."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

FEATURES = [
    "open_complaints",
    "unanswered_contacts_30d",
    "days_since_last_activity",
    "segment",
    "customer_value",
    "tenure_days",
    "preferred_channel",
    "noise",
]
CATEGORICAL = ["segment", "preferred_channel"]
SEGMENTS = ["consumer", "smb", "enterprise"]
CHANNELS = ["phone", "email", "twitter", "chat"]
START = date(2026, 1, 1)


def snapshot_dates(n_snapshots: int, spacing_days: int = 30, start: date = START) -> list[date]:
    """``n_snapshots`` dates ``spacing_days`` apart."""
    return [start + timedelta(days=spacing_days * k) for k in range(n_snapshots)]


def labelled_frame(
    n_customers: int = 600,
    n_snapshots: int = 6,
    *,
    seed: int = 0,
    spacing_days: int = 30,
    base_logit: float = -2.6,
) -> pl.DataFrame:
    """One row per (snapshot_date, customer_id): features, then ``churned`` from a known logit."""
    rng = np.random.default_rng(seed)
    frames = []
    for day in snapshot_dates(n_snapshots, spacing_days):
        n = n_customers
        open_complaints = rng.poisson(0.5, n).astype(np.int64)
        unanswered = rng.poisson(0.8, n).astype(np.int64)
        days_idle = rng.exponential(20.0, n).round()
        days_idle_missing = rng.random(n) < 0.05
        segment = rng.choice(SEGMENTS, n).astype(object)
        segment[rng.random(n) < 0.03] = None
        channel = rng.choice(CHANNELS, n)
        value = rng.gamma(2.0, 25.0, n).round(2)
        value_missing = rng.random(n) < 0.02
        tenure = rng.uniform(30, 2000, n)
        segment_effect = np.array(
            [{"consumer": 0.4, "smb": 0.0, "enterprise": -0.8}.get(s, 0.2) for s in segment]
        )
        logit = (
            base_logit
            + 0.8 * open_complaints
            + 0.35 * unanswered
            + 0.025 * np.where(days_idle_missing, 60.0, np.minimum(days_idle, 90.0))
            + segment_effect
            + 0.5 * (channel == "twitter")
            - 0.0005 * tenure
        )
        churned = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
        frames.append(
            pl.DataFrame(
                {
                    "snapshot_date": [day] * n,
                    "customer_id": np.arange(1, n + 1, dtype=np.int64),
                    "open_complaints": open_complaints,
                    "unanswered_contacts_30d": unanswered,
                    "days_since_last_activity": np.where(days_idle_missing, np.nan, days_idle),
                    "segment": pl.Series(list(segment), dtype=pl.String),
                    "customer_value": np.where(value_missing, np.nan, value),
                    "tenure_days": tenure,
                    "preferred_channel": channel,
                    "noise": rng.normal(size=n),
                    "churned": churned,
                },
                nan_to_null=True,
            )
        )
    return pl.concat(frames)
