"""Nightly scoring: calibrated churn probabilities, reasons, actions and the day's list.

:func:`score_customers` turns a feature frame into calibrated probabilities;
:func:`build_retention_list` runs the library steps after it (prioritise, exact reasons
for the listed customers, recommended actions) and assembles the ``retention_list`` rows
that :func:`warehouse.outputs.replace_retention_list` writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import polars as pl

from models.actions import ActionRules, PlacementLookup, feature_placement, recommend_actions
from models.encoding import require_model_features
from models.prioritise import PrioritisedList, PrioritySettings, prioritise
from models.reasons import (
    ExplainableModel,
    ReasonRenderer,
    TraitsLookup,
    explain_listed,
    registry_render,
    registry_traits,
)
from warehouse.outputs import build_list_rows

SCORED_SCHEMA = pl.Schema(
    {
        "customer_id": pl.Int64(),
        "churn_probability": pl.Float64(),
        "segment": pl.String(),
        "customer_value": pl.Float64(),
    }
)
"""Columns of the frame :func:`score_customers` returns."""


class ScoringModel(Protocol):
    """What scoring needs from a trained model (``models.train.TrainedModel`` has it)."""

    @property
    def features(self) -> list[str]: ...

    def predict_proba(self, frame: pl.DataFrame) -> npt.NDArray[np.float64]: ...


class ListModel(ScoringModel, ExplainableModel, Protocol):
    """A model that scores and explains."""


def default_as_of(timezone: str, now: datetime | None = None) -> date:
    """Today in ``timezone`` (the default scoring day)."""
    moment = now if now is not None else datetime.now(ZoneInfo("UTC"))
    if moment.tzinfo is None:
        raise ValueError("now must be time-zone aware")
    return moment.astimezone(ZoneInfo(timezone)).date()


def score_customers(model: ScoringModel, features: pl.DataFrame) -> pl.DataFrame:
    """Calibrated churn probability for every customer in the feature frame.

    ``features`` has ``customer_id`` (unique, not null) and every model feature;
    ``segment`` and ``customer_value`` are carried through (null when absent).
    Returns the columns of :data:`SCORED_SCHEMA` in the frame's row order.
    """
    require_model_features(features, model.features)
    n_null_ids = features["customer_id"].null_count()
    if n_null_ids:
        raise ValueError(f"the feature frame has a null customer_id in {n_null_ids} row(s)")
    n_duplicates = features.height - features["customer_id"].n_unique()
    if n_duplicates:
        raise ValueError(
            f"the feature frame repeats customer_id in {n_duplicates} row(s): "
            "expected one row per customer"
        )
    if features.height == 0:
        return pl.DataFrame(schema=SCORED_SCHEMA)

    probability = np.asarray(model.predict_proba(features), dtype=np.float64).reshape(-1)
    if probability.shape[0] != features.height:
        raise ValueError(
            f"the model returned {probability.shape[0]} probabilities for {features.height} rows"
        )
    bad = ~np.isfinite(probability) | (probability < 0.0) | (probability > 1.0)
    if bad.any():
        raise ValueError(
            f"the model returned {int(bad.sum())} probabilities that are not finite or "
            "outside [0, 1]"
        )
    return features.select(
        pl.col("customer_id").cast(pl.Int64),
        pl.Series("churn_probability", probability, dtype=pl.Float64),
        _carried(features, "segment", pl.String()),
        _carried(features, "customer_value", pl.Float64()),
    )


def _carried(features: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    if name in features.columns:
        return pl.col(name).cast(dtype)
    return pl.lit(None, dtype=dtype).alias(name)


@dataclass
class ScoredList:
    """The assembled ``retention_list`` rows for one day, with counts and stage timings."""

    rows: pl.DataFrame
    prioritised: PrioritisedList
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """What the run should report about tonight's list (see :class:`PrioritisedList`)."""
        return list(self.prioritised.warnings)

    @property
    def counts(self) -> dict[str, int]:
        """``n_scored``, ``n_listed`` and ``n_cooled_down`` for the run record."""
        return {
            "n_scored": self.prioritised.n_scored,
            "n_listed": self.prioritised.n_listed,
            "n_cooled_down": self.prioritised.n_cooled_down,
        }


def _timed(timings: dict[str, float], stage: str, step: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = step()
    timings[stage] = round(time.perf_counter() - start, 4)
    return result


def build_retention_list(
    model: ListModel,
    features: pl.DataFrame,
    cooled_down: pl.DataFrame,
    *,
    config: PrioritySettings,
    rules: ActionRules,
    as_of: date,
    model_version: str,
    run_id: str,
    top_n: int = 3,
    traits: TraitsLookup = registry_traits,
    render: ReasonRenderer = registry_render,
    placement: PlacementLookup = feature_placement,
) -> ScoredList:
    """Score, prioritise, explain the listed customers and recommend their actions.

    Reasons are exact contributions for the listed customers, compared with what is
    typical over all of ``features`` (tonight's scored population); actions follow the
    rule table from each listed customer's reasons and numbers. Returns the complete
    ``retention_list`` rows for ``as_of`` (every scored customer; reasons and actions
    for the listed ones) with per-stage timings (``score``, ``prioritise``, ``reasons``,
    ``actions``, ``assemble`` in seconds).
    """
    timings: dict[str, float] = {}
    scored: pl.DataFrame = _timed(timings, "score", lambda: score_customers(model, features))
    prioritised: PrioritisedList = _timed(
        timings, "prioritise", lambda: prioritise(scored, cooled_down, config)
    )
    reasons: pl.DataFrame = _timed(
        timings,
        "reasons",
        lambda: explain_listed(
            model,
            features,
            prioritised.listed_customer_ids,
            top_n,
            traits=traits,
            render=render,
        ),
    )
    with_actions: pl.DataFrame = _timed(
        timings, "actions", lambda: recommend_actions(rules, reasons, placement=placement)
    )
    rows: pl.DataFrame = _timed(
        timings,
        "assemble",
        lambda: build_list_rows(
            prioritised.frame,
            with_actions,
            as_of=as_of,
            model_version=model_version,
            run_id=run_id,
        ),
    )
    return ScoredList(rows=rows, prioritised=prioritised, timings=timings)
