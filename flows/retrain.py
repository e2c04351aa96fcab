"""The ``retrain`` flow: point-in-time snapshots -> labels -> train -> evaluate -> register."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext

from features.quality import feature_quality
from flows.nightly import _DB_RETRIES, _timed, with_retries
from flows.runtime import today_in
from models.evaluate import HoldoutEvaluation
from models.registry import RegisteredModel
from models.retraining import (
    Registration,
    TrainingFrame,
    TrainingPlan,
    current_champion,
    evaluate_model,
    extract_training_sources,
    fit_model,
    fit_plan_to_history,
    labelled_features,
    register_and_gate,
    training_plan,
    validate_training_sources,
)
from models.train import TrainedModel
from warehouse.db import check_connection, engine_for
from warehouse.extract import SourceData
from warehouse.migrate import init_db
from warehouse.outputs import fail_run, finish_run, heartbeating, start_run
from warehouse.schema import Warehouse, build_warehouse
from warehouse.settings import Settings
from warehouse.validate import QualityReport

log = logging.getLogger("retention.retrain")

HEARTBEAT_EVERY = timedelta(seconds=60)
"""How often a running training run refreshes its heartbeat in ``scoring_runs`` (the nightly
job marks runs whose heartbeat is older than 15 minutes as abandoned)."""


@task(name="feature-quality", cache_policy=NO_CACHE)
def feature_quality_task(frame: pl.DataFrame) -> dict[str, Any]:
    return feature_quality(frame)


@task(name="extract", **_DB_RETRIES)
def extract_task(engine: sa.Engine, wh: Warehouse, plan: TrainingPlan) -> SourceData:
    return extract_training_sources(engine, wh, plan)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(
    settings: Settings, data: SourceData, plan: TrainingPlan
) -> tuple[SourceData, QualityReport]:
    return validate_training_sources(settings, data, plan)


@task(name="load-champion", **_DB_RETRIES)
def champion_task(engine: sa.Engine, wh: Warehouse) -> RegisteredModel | None:
    return current_champion(engine, wh)


@task(name="snapshots-and-labels", cache_policy=NO_CACHE)
def features_task(
    settings: Settings,
    data: SourceData,
    plan: TrainingPlan,
    champion: RegisteredModel | None,
    horizon_days: int | None,
) -> TrainingFrame:
    return labelled_features(settings, data, plan, champion, horizon_days=horizon_days)


@task(name="fit", cache_policy=NO_CACHE)
def fit_task(settings: Settings, data: TrainingFrame, horizon_days: int | None) -> TrainedModel:
    return fit_model(settings, data, horizon_days=horizon_days)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    settings: Settings,
    data: TrainingFrame,
    model: TrainedModel,
    champion: RegisteredModel | None,
    horizon_days: int | None,
) -> HoldoutEvaluation:
    return evaluate_model(settings, data, model, champion, horizon_days=horizon_days)


@task(name="register", cache_policy=NO_CACHE)  # not retried: a retry could register twice
def register_task(
    settings: Settings,
    engine: sa.Engine,
    wh: Warehouse,
    model: TrainedModel,
    evaluation: HoldoutEvaluation,
    champion: RegisteredModel | None,
    horizon_days: int | None,
    allow_promotion: bool,
) -> Registration:
    return register_and_gate(
        settings,
        engine,
        wh,
        model,
        evaluation,
        champion,
        horizon_days=horizon_days,
        allow_promotion=allow_promotion,
    )


@dataclass
class TrainingResult:
    """What one retraining run produced."""

    run_id: str
    version: str
    promoted: bool
    decision: str
    comparison: dict[str, dict[str, float]]
    report_path: Path | None
    snapshots: list[date]
    rows: int
    quarantined: int = 0
    quality: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    left_out: list[date] = field(default_factory=list)
    """Snapshots left out because their lookback starts before the recorded history."""
    history_start: datetime | None = None
    warnings: list[str] = field(default_factory=list)
    """Snapshots left out, a champion trained on this holdout's period, ..."""
    features_quality: dict[str, Any] = field(default_factory=dict)
    """Null rates and ranges per feature, rows per snapshot (features.quality)."""


def train_and_register(
    settings: Settings,
    as_of: date,
    *,
    snapshots: int | None = None,
    horizon_days: int | None = None,
    promote: bool = True,
) -> TrainingResult:
    """Train a challenger as of ``as_of``, compare it, register it, maybe promote it.

    The run is recorded in ``scoring_runs`` with kind ``train`` and keeps a heartbeat
    while it runs, so a scoring run that starts meanwhile does not take it for abandoned.
    """
    engine = engine_for(settings)
    try:
        check_connection(engine)
        wh = build_warehouse(settings)
        init_db(engine, wh)
        run_id = start_run(engine, wh, kind="train", as_of=as_of)
        timings: dict[str, float] = {}
        try:
            with heartbeating(engine, wh, run_id, every=HEARTBEAT_EVERY):
                result = _train(
                    settings,
                    engine,
                    wh,
                    as_of,
                    run_id,
                    timings,
                    snapshots=snapshots,
                    horizon_days=horizon_days,
                    promote=promote,
                )
        except BaseException as exc:
            fail_run(engine, wh, run_id, error=exc, timings=timings)
            raise
        finish_run(
            engine,
            wh,
            run_id,
            model_version=result.version,
            counts={"quarantined": result.quarantined},
            timings=timings,
            data_quality={
                "labelled_rows": result.rows,
                "snapshots": [d.isoformat() for d in result.snapshots],
                "left_out_snapshots": [d.isoformat() for d in result.left_out],
                "history_start": None
                if result.history_start is None
                else result.history_start.isoformat(),
                "warnings": list(result.warnings),
                "decision": result.decision,
                "sources": result.quality,
                "features": result.features_quality,
            },
        )
        return result
    finally:
        engine.dispose()


def _train(
    settings: Settings,
    engine: sa.Engine,
    wh: Warehouse,
    as_of: date,
    run_id: str,
    timings: dict[str, float],
    *,
    snapshots: int | None,
    horizon_days: int | None,
    promote: bool,
) -> TrainingResult:
    started = time.perf_counter()
    plan = training_plan(settings, as_of, n_snapshots=snapshots, horizon_days=horizon_days)
    data = _timed(timings, "extract", with_retries(extract_task, settings), engine, wh, plan)
    clean, quality = _timed(timings, "validate", validate_task, settings, data, plan)
    if quality.n_quarantined:
        for line in quality.summary_lines():
            log.warning("training data: %s", line)
    plan = fit_plan_to_history(settings, plan, clean)
    champion = _timed(timings, "load_champion", with_retries(champion_task, settings), engine, wh)
    frame = _timed(
        timings, "features", features_task, settings, clean, plan, champion, horizon_days
    )
    features_quality = _timed(timings, "feature_quality", feature_quality_task, frame.frame)
    model = _timed(timings, "fit", fit_task, settings, frame, horizon_days)
    evaluation = _timed(
        timings, "evaluate", evaluate_task, settings, frame, model, champion, horizon_days
    )
    registration = _timed(
        timings,
        "register",
        register_task,
        settings,
        engine,
        wh,
        model,
        evaluation,
        champion,
        horizon_days,
        promote,
    )
    timings["total"] = round(time.perf_counter() - started, 4)
    return TrainingResult(
        run_id=run_id,
        version=registration.version,
        promoted=registration.promoted,
        decision=registration.decision,
        comparison=registration.comparison,
        report_path=registration.report_path,
        snapshots=plan.snapshots,
        rows=frame.frame.height,
        quarantined=quality.n_quarantined,
        quality=quality.to_dict(),
        timings=timings,
        left_out=list(plan.left_out),
        history_start=plan.history_start,
        warnings=list(registration.warnings),
        features_quality=features_quality,
    )


def publish_report(result: TrainingResult) -> None:
    """The model report and the metric table as Prefect artifacts (inside a flow run)."""
    if FlowRunContext.get() is None:
        return
    from prefect.artifacts import create_markdown_artifact

    metrics = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "top_decile_lift"]
    header = "| scorer | " + " | ".join(metrics) + " |"
    rows = [
        f"| {name} | " + " | ".join(_cell(values.get(m)) for m in metrics) + " |"
        for name, values in result.comparison.items()
    ]
    body = [
        f"# Model {result.version}",
        "",
        *(f"> **Warning:** {warning}\n" for warning in result.warnings),
        f"**{result.decision}**",
        "",
        f"Trained on {len(result.snapshots)} snapshots "
        f"({result.snapshots[0]} .. {result.snapshots[-1]}), {result.rows:,} labelled rows.",
        "",
        header,
        "|" + "---|" * (len(metrics) + 1),
        *rows,
    ]
    if result.report_path is not None and result.report_path.exists():
        body += ["", f"Full report with plots: `{result.report_path}`"]
    create_markdown_artifact(
        markdown="\n".join(body), key="model-report", description=f"model {result.version}"
    )
    if result.report_path is not None and result.report_path.exists():
        create_markdown_artifact(
            markdown=_html_as_markdown(result.report_path),
            key="model-report-plots",
            description=f"plots for model {result.version}",
        )


def _cell(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"


def _html_as_markdown(path: Path) -> str:
    """The report's embedded plots as markdown images (Prefect renders data URIs)."""
    import re

    images = []
    for tag in re.findall(r"<img\b[^>]*>", path.read_text(encoding="utf-8")):
        src = re.search(r"src=['\"](data:image/png;base64,[^'\"]+)", tag)
        alt = re.search(r"alt=['\"]([^'\"]*)", tag)
        if src:
            images.append(f"![{alt.group(1) if alt else 'plot'}]({src.group(1)})")
    return "\n\n".join(images) or "(no plots)"


@flow(name="retrain", log_prints=False)
def retrain(
    as_of: date | None = None,
    snapshots: int | None = None,
    horizon_days: int | None = None,
    promote: bool = True,
    settings: Settings | None = None,
) -> TrainingResult:
    """Retrain on point-in-time snapshots; promote the challenger when it passes the gate."""
    settings = settings or Settings()
    day = as_of or today_in(settings.timezone)
    result = train_and_register(
        settings, day, snapshots=snapshots, horizon_days=horizon_days, promote=promote
    )
    publish_report(result)
    return result
