"""Retraining stages as plain functions (the ``retrain`` Prefect flow wires them).

``as_of`` is the reference date: the newest snapshot is ``as_of - horizon``, so every
label is complete by ``as_of``. Snapshots are spaced ``snapshot_spacing_days`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from features.build import (
    FeatureConfig,
    build_features,
    discover_event_types,
    snapshot_cutoff,
)
from features.labels import build_labels
from features.registry import categorical_features, feature_columns
from models.drift import reference_profile
from models.evaluate import CHAMPION, MODEL, RULE_BASELINE, HoldoutEvaluation, evaluate_candidate
from models.registry import (
    NoChampionError,
    RegisteredModel,
    gate,
    load_model,
    promote,
    register,
    set_report_path,
)
from models.report import write_report
from models.train import TrainConfig, TrainedModel, train_model
from warehouse.extract import SourceData, extract
from warehouse.schema import Warehouse
from warehouse.settings import Settings
from warehouse.validate import QualityReport, validate

DAYS_PER_MONTH = 30.4375


@dataclass(frozen=True)
class TrainingPlan:
    """The snapshots to train on and the rows to read for them."""

    as_of: date
    snapshots: list[date]
    known_until: datetime
    start: datetime
    end: datetime | None
    future_after: datetime


def training_plan(
    settings: Settings,
    as_of: date,
    *,
    n_snapshots: int | None = None,
    horizon_days: int | None = None,
    now: datetime | None = None,
) -> TrainingPlan:
    """Snapshot dates (oldest first) ending at ``as_of - horizon`` and the extraction window."""
    n = n_snapshots or settings.n_snapshots
    horizon = horizon_days or settings.horizon_days
    if n < 2:
        raise ValueError(f"training needs at least 2 snapshots, got {n}")
    newest = as_of - timedelta(days=horizon)
    spacing = timedelta(days=settings.snapshot_spacing_days)
    snapshots = [newest - spacing * i for i in reversed(range(n))]
    known_until = snapshot_cutoff(as_of, settings.timezone)
    start = snapshot_cutoff(snapshots[0], settings.timezone) - timedelta(
        days=max(settings.lookback_days, settings.inactivity_days)
    )
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if now >= known_until:
        return TrainingPlan(as_of, snapshots, known_until, start, None, now)
    return TrainingPlan(as_of, snapshots, known_until, start, known_until, known_until)


def extract_training_sources(engine: sa.Engine, wh: Warehouse, plan: TrainingPlan) -> SourceData:
    """Read the source rows every snapshot and label needs."""
    return extract(engine, wh, window_start=plan.start, window_end=plan.end)


def validate_training_sources(
    settings: Settings, data: SourceData, plan: TrainingPlan
) -> tuple[SourceData, QualityReport]:
    """Quarantine and normalise bad rows; count every rule."""
    return validate(data, as_of=plan.future_after, known_channels=settings.known_channels)


def current_champion(engine: sa.Engine, wh: Warehouse) -> RegisteredModel | None:
    """The champion model, or None when there is none yet."""
    try:
        return load_model(engine, wh)
    except NoChampionError:
        return None


@dataclass(frozen=True)
class TrainingFrame:
    """Labelled point-in-time features of every snapshot, and what built them."""

    frame: pl.DataFrame
    event_types: list[str]
    features: list[str]
    categorical: list[str]


def labelled_features(
    settings: Settings,
    sources: SourceData,
    plan: TrainingPlan,
    champion: RegisteredModel | None,
    *,
    horizon_days: int | None = None,
) -> TrainingFrame:
    """Features and labels for every snapshot, collected once.

    Event types come from activity before the newest snapshot (never from the label
    period); the champion's event types are added so it can score the same holdout rows.
    """
    config = FeatureConfig.from_settings(settings)
    if horizon_days is not None:
        config = replace(config, horizon_days=horizon_days)
    lazy = sources.lazy()
    last_cutoff = snapshot_cutoff(plan.snapshots[-1], settings.timezone)
    event_types = discover_event_types(
        lazy["activity"].filter(pl.col("occurred_at") < last_cutoff), settings.max_event_types
    )
    all_types = list(event_types)
    if champion is not None:
        all_types += [t for t in champion.event_types if t not in all_types]
    features = build_features(lazy, plan.snapshots, config, all_types)
    labels = build_labels(lazy, plan.snapshots, config, known_until=plan.known_until)
    frame = features.join(labels, on=["snapshot_date", "customer_id"], how="inner").collect()
    return TrainingFrame(
        frame=frame,
        event_types=event_types,
        features=feature_columns(event_types),
        categorical=categorical_features(),
    )


def fit_model(
    settings: Settings, data: TrainingFrame, *, horizon_days: int | None = None
) -> TrainedModel:
    """Train, early-stop and calibrate a challenger on the labelled snapshots."""
    config = TrainConfig(seed=settings.seed, horizon_days=horizon_days or settings.horizon_days)
    return train_model(
        data.frame, data.features, data.categorical, config, event_types=data.event_types
    )


def evaluate_model(
    settings: Settings,
    data: TrainingFrame,
    model: TrainedModel,
    champion: RegisteredModel | None,
    *,
    horizon_days: int | None = None,
) -> HoldoutEvaluation:
    """The challenger, the champion and the rule baseline on the same holdout rows."""
    horizon = horizon_days or settings.horizon_days
    return evaluate_candidate(
        data.frame,
        model,
        champion=champion.model if champion is not None else None,
        capacity=settings.list_capacity,
        offer_cost=settings.offer_cost,
        success_rate=settings.offer_success_rate,
        horizon_months=horizon / DAYS_PER_MONTH,
    )


def drift_reference(model: TrainedModel, evaluation: HoldoutEvaluation) -> dict[str, Any]:
    """The distributions nightly populations are compared with (see docs/drift.md).

    Taken from the holdout: the most recent snapshots, scored by a model that did not train on
    them, so tonight's scores are compared with out-of-sample scores.
    """
    return reference_profile(
        evaluation.holdout, model.features, model.categorical, evaluation.scores[MODEL]
    )


@dataclass(frozen=True)
class Registration:
    """What happened to a newly trained model."""

    version: str
    promoted: bool
    decision: str
    comparison: dict[str, dict[str, float]]
    report_path: Path | None


def register_and_gate(
    settings: Settings,
    engine: sa.Engine,
    wh: Warehouse,
    model: TrainedModel,
    evaluation: HoldoutEvaluation,
    champion: RegisteredModel | None,
    *,
    horizon_days: int | None = None,
    allow_promotion: bool = True,
) -> Registration:
    """Register the challenger, apply the promotion gate, write the model report."""
    overall = evaluation.report.overall
    passed, why = gate(
        overall[MODEL],
        overall.get(CHAMPION) if champion is not None else None,
        overall[RULE_BASELINE],
        metric=settings.promotion_metric,
        margin=settings.promotion_margin,
    )
    version = register(
        engine,
        wh,
        model,
        metrics=evaluation.report.to_dict(),
        label_kind=settings.label_kind,
        horizon_days=horizon_days or settings.horizon_days,
        training_reference=drift_reference(model, evaluation),
    )
    promoted = passed and allow_promotion
    if promoted:
        promote(engine, wh, version)
    decision = why if allow_promotion or not passed else f"{why} (not promoted: --no-promote)"
    report_dir = Path(settings.artifacts_dir) / "models" / version
    report = write_report(
        report_dir / "report.html",
        evaluation.report,
        model,
        evaluation.holdout,
        evaluation.scores,
        version=version,
        decision=decision,
        seed=settings.seed,
    )
    set_report_path(engine, wh, version, str(report))
    comparison = {name: dict(metrics) for name, metrics in overall.items()}
    return Registration(version, promoted, decision, comparison, report)
