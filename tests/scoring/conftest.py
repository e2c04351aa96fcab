"""Fixtures for the scoring tests: a small real LightGBM model and warehouses with output tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from models.train import TrainConfig, TrainedModel, train_model
from warehouse.db import engine_for
from warehouse.migrate import init_db
from warehouse.schema import Warehouse, build_warehouse
from warehouse.settings import Settings

MODEL_FEATURES = [
    "open_complaints",
    "oldest_open_complaint_days",
    "public_complaints_unanswered_30d",
    "transfers_per_contact_30d",
    "activity_trend_30d",
    "tenure_days",
    "segment",
    "customer_value",
]
"""Registry features of the test model; tenure_days, segment and customer_value have no reason."""

CATEGORICAL = ["segment"]
SEGMENTS = ["smb", "enterprise", "consumer"]
CHANNELS = ["twitter", "facebook", "instagram"]


def feature_frame(n: int, seed: int, snapshot_date: date) -> pl.DataFrame:
    """Synthetic feature rows (features plus the reason helper columns) for ``n`` customers."""
    rng = np.random.default_rng(seed)
    open_complaints = rng.poisson(0.6, n).astype(float)
    oldest = np.where(open_complaints > 0, rng.uniform(1, 40, n), np.nan)
    unanswered_public = rng.poisson(0.3, n).astype(float)
    transfers = rng.gamma(1.0, 0.8, n)
    trend = rng.uniform(0.0, 1.6, n)
    tenure = rng.uniform(30, 2000, n)
    value = np.round(rng.uniform(5, 200, n), 2)
    value[rng.random(n) < 0.05] = np.nan
    frame = pl.DataFrame(
        {
            "snapshot_date": [snapshot_date] * n,
            "customer_id": np.arange(1, n + 1, dtype=np.int64),
            "open_complaints": open_complaints,
            "oldest_open_complaint_days": oldest,
            "public_complaints_unanswered_30d": unanswered_public,
            "transfers_per_contact_30d": transfers,
            "activity_trend_30d": trend,
            "tenure_days": tenure,
            "segment": rng.choice(SEGMENTS, n),
            "customer_value": value,
            "unanswered_public_channel_30d": rng.choice(CHANNELS, n),
        },
        nan_to_null=True,
    )
    return frame.with_columns(activity_drop_30d=1.0 - pl.col("activity_trend_30d"))


def _labelled(n_per_date: int, dates: list[date]) -> pl.DataFrame:
    frames = []
    for k, d in enumerate(dates):
        frame = feature_frame(n_per_date, seed=100 + k, snapshot_date=d)
        logit = (
            -2.2
            + 0.9 * frame["open_complaints"].to_numpy()
            + 1.1 * frame["public_complaints_unanswered_30d"].to_numpy()
            + 0.7 * frame["transfers_per_contact_30d"].to_numpy()
            - 1.2 * frame["activity_trend_30d"].to_numpy()
            - 0.0004 * frame["tenure_days"].to_numpy()
        )
        rng = np.random.default_rng(1_000 + k)
        churned = rng.random(frame.height) < 1.0 / (1.0 + np.exp(-logit))
        frames.append(frame.with_columns(churned=pl.Series(churned)))
    return pl.concat(frames)


@pytest.fixture(scope="session")
def trained_model() -> TrainedModel:
    """A small calibrated LightGBM churn model on the registry features above (about 1 s)."""
    dates = [date(2026, 1, 1) + timedelta(days=30 * k) for k in range(5)]
    config = TrainConfig(
        seed=7,
        holdout_snapshots=1,
        validation_snapshots=1,
        calibration="platt",
        n_estimators=60,
        early_stopping_rounds=20,
        num_leaves=15,
        min_child_samples=20,
        min_data_per_group=20,
        learning_rate=0.1,
    )
    return train_model(_labelled(800, dates), MODEL_FEATURES, CATEGORICAL, config)


@pytest.fixture(scope="session")
def scoring_features() -> pl.DataFrame:
    """The feature frame of one scoring day: 400 customers."""
    return feature_frame(400, seed=4242, snapshot_date=date(2026, 11, 20))


@pytest.fixture
def settings(warehouse_url: str, make_settings: Callable[..., Settings]) -> Settings:
    """Settings for an empty warehouse on each backend."""
    return make_settings(warehouse_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    """An engine for ``settings``, disposed after the test."""
    engine = engine_for(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def wh(settings: Settings, engine: sa.Engine) -> Warehouse:
    """The contract with the output tables created."""
    warehouse = build_warehouse(settings)
    init_db(engine, warehouse)
    return warehouse
