"""Fixtures for the model tests: synthetic snapshots, a small trained model, registry tables.

Models train single-threaded: LightGBM gives the same trees on 1 and 2 threads, and one
thread stays fast when the test machine is busy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import polars as pl
import pytest
import sqlalchemy as sa

from models.evaluate import HoldoutEvaluation, evaluate_candidate
from models.train import TrainConfig, TrainedModel, train_model
from tests.models.synthetic import CATEGORICAL, FEATURES, labelled_frame
from warehouse.schema import Warehouse, build_warehouse
from warehouse.settings import Settings


def small_config(**changes: object) -> TrainConfig:
    """A quick configuration for a few thousand rows."""
    values: dict[str, object] = {
        "seed": 11,
        "holdout_snapshots": 2,
        "n_estimators": 150,
        "early_stopping_rounds": 20,
        "num_leaves": 15,
        "min_child_samples": 20,
        "min_data_per_group": 20,
        "learning_rate": 0.1,
        "num_threads": 1,
    }
    values.update(changes)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def labelled() -> pl.DataFrame:
    """6 monthly snapshots of 600 customers (3,600 rows), churn rate about 20%."""
    return labelled_frame(600, 6, seed=3)


@pytest.fixture(scope="session")
def trained(labelled: pl.DataFrame) -> TrainedModel:
    """A model trained on ``labelled`` with :func:`small_config`."""
    return train_model(labelled, FEATURES, CATEGORICAL, small_config(), event_types=["login"])


@pytest.fixture(scope="session")
def other_model(labelled: pl.DataFrame) -> TrainedModel:
    """A second, different model on the same data (another seed, fewer leaves)."""
    return train_model(labelled, FEATURES, CATEGORICAL, small_config(seed=5, num_leaves=4))


def _evaluate(
    labelled: pl.DataFrame, trained: TrainedModel, champion: TrainedModel | None
) -> HoldoutEvaluation:
    return evaluate_candidate(
        labelled,
        trained,
        champion=champion,
        capacity=60,
        offer_cost=10,
        success_rate=0.3,
        horizon_months=1,
    )


@pytest.fixture(scope="session")
def evaluated(labelled: pl.DataFrame, trained: TrainedModel) -> HoldoutEvaluation:
    """``trained`` evaluated on its holdout against the rule baseline (no champion)."""
    return _evaluate(labelled, trained, None)


@pytest.fixture(scope="session")
def evaluated_with_champion(
    labelled: pl.DataFrame, trained: TrainedModel, other_model: TrainedModel
) -> HoldoutEvaluation:
    """``trained`` evaluated against ``other_model`` as champion and the rule baseline."""
    return _evaluate(labelled, trained, other_model)


@pytest.fixture
def registry(
    warehouse_url: str, make_settings: Callable[..., Settings]
) -> Iterator[tuple[sa.Engine, Warehouse]]:
    """An engine and the bound contract with empty output tables, on each backend."""
    settings = make_settings(warehouse_url)
    engine = sa.create_engine(settings.url)
    wh = build_warehouse(settings)
    wh.metadata.create_all(engine, tables=wh.outputs)
    try:
        yield engine, wh
    finally:
        engine.dispose()
