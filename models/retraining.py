"""Retraining stages as plain functions (the ``retrain`` Prefect flow wires them).

``as_of`` is the reference date: the newest snapshot is ``as_of - horizon``, so every
label is complete by ``as_of``. Snapshots are spaced ``snapshot_spacing_days`` apart.

A snapshot's features count events in the ``lookback_days`` before it. When that period
starts before the warehouse's recorded history, the counts are understated (a customer
with two contacts a month shows a fraction of them), so :func:`fit_plan_to_history`
leaves such snapshots out after extraction, says so, and refuses to train when too few
remain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from features.build import (
    FeatureConfig,
    FutureDateError,
    build_features,
    check_day_has_begun,
    discover_event_types,
    is_today,
    snapshot_cutoff,
)
from features.labels import build_labels
from features.registry import categorical_features, feature_columns
from models.drift import reference_profile
from models.evaluate import (
    CHAMPION,
    MODEL,
    RULE_BASELINE,
    HoldoutEvaluation,
    evaluate_candidate,
    training_overlap,
)
from models.nightly import champion_feature_settings, champion_settings
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

logger = logging.getLogger(__name__)

DAYS_PER_MONTH = 30.4375

MIN_SNAPSHOTS = 4
"""Fewest snapshots a training plan may ask for: 2 holdout + 1 validation + 1 to fit on
(:func:`min_training_snapshots` with the default :class:`~models.train.TrainConfig`)."""

HISTORY_TABLES = {"interactions": "opened_at", "activity": "occurred_at"}
"""The event tables whose first rows mark the start of the recorded history.

Subscriptions are not among them: a customer who signed up years before the warehouse's
history began has a subscription row that starts then, so their start dates say nothing
about when events began to be recorded.
"""

HISTORY_TOLERANCE = timedelta(days=1)
"""A lookback period may start up to this long before the first recorded event (the first
event of the first recorded day need not fall at midnight)."""


class TrainingPlanError(ValueError):
    """The training request cannot be planned: bad parameters or too little history."""


def min_training_snapshots() -> int:
    """Snapshots training needs: the holdout, the validation dates and one date to fit on."""
    config = TrainConfig(seed=0)
    return config.holdout_snapshots + config.validation_snapshots + 1


@dataclass(frozen=True)
class TrainingPlan:
    """The snapshots to train on and the rows to read for them.

    After :func:`fit_plan_to_history`, ``snapshots`` holds only the snapshots with a full
    lookback inside the recorded history, ``left_out`` the others, ``history_start`` the
    first recorded event and ``warnings`` what the run must report.
    """

    as_of: date
    snapshots: list[date]
    known_until: datetime
    start: datetime
    end: datetime | None
    future_after: datetime
    history_start: datetime | None = None
    left_out: list[date] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def training_plan(
    settings: Settings,
    as_of: date,
    *,
    n_snapshots: int | None = None,
    horizon_days: int | None = None,
    now: datetime | None = None,
) -> TrainingPlan:
    """Snapshot dates (oldest first) ending at ``as_of - horizon`` and the extraction window.

    ``None`` means the setting; any value given is checked (0 is refused, not taken as
    "the default"). Raises :class:`TrainingPlanError`.
    """
    n = settings.n_snapshots if n_snapshots is None else n_snapshots
    horizon = settings.horizon_days if horizon_days is None else horizon_days
    if n < MIN_SNAPSHOTS:
        raise TrainingPlanError(
            f"training needs at least {MIN_SNAPSHOTS} snapshots, got {n} "
            f"(the default is {settings.n_snapshots})"
        )
    if horizon < 1:
        raise TrainingPlanError(f"the churn horizon must be at least 1 day, got {horizon}")
    newest = as_of - timedelta(days=horizon)
    spacing = timedelta(days=settings.snapshot_spacing_days)
    snapshots = [newest - spacing * i for i in reversed(range(n))]
    now = (now or datetime.now(UTC)).astimezone(UTC)
    # The newest snapshot's labels need its whole horizon, up to the cutoff of as_of.
    try:
        known_until = check_day_has_begun(as_of, settings.timezone, now, "training")
    except FutureDateError as exc:
        raise TrainingPlanError(
            f"{exc}: the newest snapshot's labels need its {horizon}-day horizon to have passed"
        ) from None
    # The same history before the oldest snapshot as the nightly job reads before its day.
    history = FeatureConfig.from_settings(settings).history_days
    start = snapshot_cutoff(snapshots[0] - timedelta(days=history), settings.timezone)
    if is_today(as_of, settings.timezone, now):
        return TrainingPlan(as_of, snapshots, known_until, start, None, now)
    return TrainingPlan(as_of, snapshots, known_until, start, known_until, known_until)


def _lookback_days(settings: Settings) -> int:
    """How far back a snapshot's features (and an inactivity population) look."""
    if settings.label_kind == "inactivity":
        return max(settings.lookback_days, settings.inactivity_days)
    return settings.lookback_days


def history_start(sources: SourceData) -> datetime | None:
    """When the recorded history starts: the latest of the first event times in
    :data:`HISTORY_TABLES` (interactions opened, activity), so every feature source has
    begun by then. Empty tables are ignored; None when all are empty.

    Read from the extracted rows, which is enough: a history that starts before the
    extraction window shows up as events from the window's start.
    """
    firsts: list[datetime] = []
    for name, column in HISTORY_TABLES.items():
        frame: pl.DataFrame = getattr(sources, name)
        first = frame.get_column(column).min() if frame.height else None
        if isinstance(first, datetime):
            firsts.append(first if first.tzinfo else first.replace(tzinfo=UTC))
    return max(firsts) if firsts else None


def lookback_start(settings: Settings, snapshot: date) -> datetime:
    """The first instant a snapshot's features (and inactivity label) read."""
    return snapshot_cutoff(snapshot - timedelta(days=_lookback_days(settings)), settings.timezone)


def _has_full_lookback(settings: Settings, snapshot: date, first_event: datetime) -> bool:
    return lookback_start(settings, snapshot) >= first_event - HISTORY_TOLERANCE


def _dates(days: list[date]) -> str:
    return ", ".join(d.isoformat() for d in days)


def earliest_as_of(
    settings: Settings, plan: TrainingPlan, first_event: datetime, n_snapshots: int
) -> date:
    """The earliest as-of date whose newest ``n_snapshots`` snapshots all have full lookback."""
    horizon = plan.as_of - plan.snapshots[-1]
    spacing = timedelta(days=settings.snapshot_spacing_days)
    candidate = first_event.date() + timedelta(days=_lookback_days(settings)) + horizon
    candidate += spacing * (n_snapshots - 1) - timedelta(days=3)
    while not _has_full_lookback(
        settings, candidate - horizon - spacing * (n_snapshots - 1), first_event
    ):
        candidate += timedelta(days=1)
    return candidate


def fit_plan_to_history(
    settings: Settings, plan: TrainingPlan, sources: SourceData
) -> TrainingPlan:
    """Leave out the snapshots whose lookback starts before the recorded history.

    Their features would be understated: counts over the lookback miss the days before the
    history starts. The returned plan lists them in ``left_out`` with a warning (also
    logged). Raises :class:`TrainingPlanError`, naming the dates and the history start,
    when snapshots were left out and fewer remain than training needs
    (:func:`min_training_snapshots`).
    """
    first_event = history_start(sources)
    if first_event is None:
        logger.warning("no interactions or activity extracted: cannot tell where history starts")
        return plan
    usable = [d for d in plan.snapshots if _has_full_lookback(settings, d, first_event)]
    left_out = [d for d in plan.snapshots if d not in usable]
    if not left_out:
        return replace(plan, history_start=first_event)
    lookback = _lookback_days(settings)
    start_text = first_event.isoformat(timespec="minutes")
    needed = max(MIN_SNAPSHOTS, min_training_snapshots())
    if len(usable) < needed:
        later = earliest_as_of(settings, plan, first_event, needed)
        raise TrainingPlanError(
            f"only {len(usable)} of the {len(plan.snapshots)} training snapshots as of "
            f"{plan.as_of} {'has its' if len(usable) == 1 else 'have their'} full "
            f"{lookback}-day lookback inside the warehouse history, which starts "
            f"{start_text} (first recorded interaction and activity); "
            f"training needs at least {needed}. Usable: {_dates(usable) or 'none'}; too early: "
            f"{_dates(left_out)}. Use a later --as-of ({later} or later gives {needed} usable "
            f"monthly snapshots), fewer and closer snapshots (--snapshots, "
            f"RETENTION_SNAPSHOT_SPACING_DAYS), or load more history"
        )
    warning = (
        f"left out {len(left_out)} of {len(plan.snapshots)} snapshots ({_dates(left_out)}): "
        f"their {lookback}-day lookback starts before the warehouse history, which starts "
        f"{start_text}, so their features would be understated; trained on the "
        f"{len(usable)} from {usable[0]} (ask for --snapshots {len(usable)}, or load more "
        "history, to avoid this)"
    )
    logger.warning("training data: %s", warning)
    return replace(
        plan,
        snapshots=usable,
        history_start=first_event,
        left_out=left_out,
        warnings=[*plan.warnings, warning],
    )


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
    warnings: list[str] = field(default_factory=list)
    """The plan's warnings (snapshots left out), carried to the evaluation."""


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
        warnings=list(plan.warnings),
    )


def fit_model(
    settings: Settings, data: TrainingFrame, *, horizon_days: int | None = None
) -> TrainedModel:
    """Train, early-stop and calibrate a challenger on the labelled snapshots."""
    horizon = settings.horizon_days if horizon_days is None else horizon_days
    config = TrainConfig(seed=settings.seed, horizon_days=horizon)
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
    """The challenger, the champion and the rule baseline on the same holdout rows.

    The report's warnings carry the training data's warnings (snapshots left out) and,
    when the champion was trained on dates inside this holdout, a warning that its
    figures are optimistic (:func:`champion_overlap_warning`).
    """
    horizon = settings.horizon_days if horizon_days is None else horizon_days
    evaluation = evaluate_candidate(
        data.frame,
        model,
        champion=champion.model if champion is not None else None,
        capacity=settings.list_capacity,
        offer_cost=settings.offer_cost,
        success_rate=settings.offer_success_rate,
        horizon_months=horizon / DAYS_PER_MONTH,
    )
    warnings = list(data.warnings)
    if champion is not None:
        overlap = champion_overlap_warning(champion, model.holdout_dates)
        differs = champion_target_warning(champion, settings, horizon)
        for warning in (overlap, differs):
            if warning is not None:
                logger.warning("evaluation: %s", warning)
                warnings.append(warning)
    if not warnings:
        return evaluation
    report = replace(evaluation.report, warnings=[*evaluation.report.warnings, *warnings])
    return replace(evaluation, report=report)


def champion_target_warning(
    champion: RegisteredModel, settings: Settings, horizon_days: int
) -> str | None:
    """A warning when the champion was trained for another target or other features.

    The holdout is labelled and featured with this run's settings; a champion trained with
    another label kind, horizon, lookback, inactivity period or public channels is then
    judged on a task it was not trained for, and the comparison says little either way.
    """
    trained = champion_settings(champion)
    now = {name: getattr(settings, name) for name in trained}
    now["horizon_days"] = horizon_days
    differences = [
        f"{name} {_shown(value)} (now {_shown(now[name])})"
        for name, value in trained.items()
        if now[name] != value
    ]
    if not differences:
        return None
    return (
        f"the champion {champion.version} was trained with {', '.join(differences)}; it is "
        "judged here on this run's labels and features, a task it was not trained for, so "
        "the comparison with it says little"
    )


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def champion_overlap_warning(champion: RegisteredModel, holdout_dates: list[date]) -> str | None:
    """A warning when the champion was trained on this holdout's period, else None.

    From the champion's registered training snapshot dates (fit and validation) and its
    horizon: a date whose label window (date + horizon) ends after the first holdout date
    means the champion learnt from outcomes observed inside the holdout (or later), so its
    holdout metrics are optimistic and the comparison favours it.
    """
    if not holdout_dates:
        return None
    overlap = training_overlap(champion.model.train_dates, champion.horizon_days, holdout_dates)
    if not overlap:
        return None
    train = champion.model.train_dates
    first, last = min(holdout_dates), max(holdout_dates)
    return (
        f"the champion {champion.version} was trained on snapshots up to {max(train)} "
        f"(training window {min(train)}..{max(train)}, horizon {champion.horizon_days} days); "
        f"{len(overlap)} of them ({_dates(overlap)}) have labels observed on or after this "
        f"holdout's first date {first} (holdout {first}..{last}), so the champion has seen "
        "these outcomes: its holdout figures are optimistic and the comparison favours it"
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
    warnings: list[str] = field(default_factory=list)


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
        horizon_days=settings.horizon_days if horizon_days is None else horizon_days,
        training_reference=drift_reference(model, evaluation),
        feature_settings=champion_feature_settings(settings),
    )
    promoted = passed and allow_promotion
    if promoted:
        promote(engine, wh, version)
    decision = (
        why
        if allow_promotion or not passed
        else "passed the gate but not promoted (--no-promote): " + why.removeprefix("promoted: ")
    )
    report_dir = Path(settings.artifacts_dir) / "models" / version
    report = write_report(
        report_dir / "report.html",
        evaluation.report,
        model,
        evaluation.holdout,
        evaluation.scores,
        rank_scores=evaluation.rank_scores,
        version=version,
        decision=decision,
        seed=settings.seed,
    )
    set_report_path(engine, wh, version, str(report))
    comparison = {name: dict(metrics) for name, metrics in overall.items()}
    return Registration(
        version, promoted, decision, comparison, report, list(evaluation.report.warnings)
    )
