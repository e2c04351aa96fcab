"""Nightly scoring and backfill flows: thin Prefect tasks over the library stages.

The same flows run under a Prefect worker (``prefect.yaml``) and from the CLI
(``retention score``), where Prefect starts a temporary local API by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import polars as pl
import sqlalchemy as sa
from prefect import Task, flow, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.tasks import exponential_backoff

from features.build import check_day_has_begun
from flows.runtime import today_in
from models.drift import SCORE_KEY, DriftStop, DriftVerdict
from models.nightly import (
    ScoringWindow,
    check_drift,
    extract_sources,
    feature_report,
    score_and_list,
    scoring_features,
    scoring_window,
    settings_for_champion,
    validate_sources,
)
from models.registry import RegisteredModel, load_model
from models.scoring import ScoredList
from warehouse.db import check_connection, engine_for, is_transient
from warehouse.extract import SourceData
from warehouse.migrate import current_version, init_db
from warehouse.outputs import (
    RunSummary,
    as_of_lock,
    fail_run,
    heartbeating,
    mark_abandoned_runs,
    replace_retention_list,
    start_run,
)
from warehouse.schema import SCHEMA_VERSION, Warehouse, build_warehouse
from warehouse.settings import Settings, mask_secrets
from warehouse.validate import QualityReport

log = logging.getLogger("retention.nightly")

P = ParamSpec("P")
R = TypeVar("R")

STALE_RUN_AFTER = timedelta(minutes=15)
"""A run whose heartbeat is older than this (heartbeats come every minute) is abandoned."""


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only errors that a second attempt can fix (a dropped connection, a deadlock)."""
    error = getattr(state, "data", None)
    return isinstance(error, BaseException) and is_transient(error)


_DB_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": _retry_transient,
    "cache_policy": NO_CACHE,
}
"""Database stages retry transient errors; the counts and delays come from the settings."""


def with_retries(stage: Task[P, R], settings: Settings) -> Task[P, R]:
    """``stage`` retrying transient errors as configured (``db_retries``, doubling delays)."""
    return stage.with_options(
        retries=settings.db_retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=settings.db_retry_delay_seconds),
    )


@task(name="extract", **_DB_RETRIES)
def extract_task(engine: sa.Engine, wh: Warehouse, window: ScoringWindow) -> SourceData:
    return extract_sources(engine, wh, window)


@task(name="validate", cache_policy=NO_CACHE)
def validate_task(
    settings: Settings, data: SourceData, window: ScoringWindow
) -> tuple[SourceData, QualityReport]:
    return validate_sources(settings, data, window)


@task(name="load-champion", **_DB_RETRIES)
def load_champion_task(engine: sa.Engine, wh: Warehouse) -> RegisteredModel:
    return load_model(engine, wh)


@task(name="features", cache_policy=NO_CACHE)
def features_task(
    settings: Settings, data: SourceData, model: RegisteredModel, as_of: date
) -> pl.DataFrame:
    return scoring_features(settings, data, model, as_of)


@task(name="feature-quality", cache_policy=NO_CACHE)
def feature_quality_task(model: RegisteredModel, features: pl.DataFrame) -> dict[str, Any]:
    return feature_report(model, features)


@task(name="score-and-list", cache_policy=NO_CACHE)
def score_task(
    settings: Settings,
    model: RegisteredModel,
    features: pl.DataFrame,
    data: SourceData,
    window: ScoringWindow,
    run_id: str,
) -> ScoredList:
    return score_and_list(settings, model, features, data, window, run_id)


@task(name="drift", cache_policy=NO_CACHE)
def drift_task(
    settings: Settings, model: RegisteredModel, features: pl.DataFrame, scored: ScoredList
) -> DriftVerdict | None:
    return check_drift(settings, model, features, scored)


@task(name="write-list", **_DB_RETRIES)
def write_task(
    engine: sa.Engine,
    wh: Warehouse,
    as_of: date,
    rows: pl.DataFrame,
    run_id: str,
    summary: RunSummary,
) -> int:
    return replace_retention_list(engine, wh, as_of, rows, run_id, summary=summary)


@dataclass
class RunResult:
    """What one scoring run did."""

    run_id: str
    as_of: date
    status: str
    model_version: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    drift: dict[str, Any] | None = None
    top: pl.DataFrame | None = None


def _timed(
    timings: dict[str, float], stage: str, fn: Callable[P, R], *a: P.args, **k: P.kwargs
) -> R:
    """Run one stage and record its wall time.

    Inside a flow run a task goes through the Prefect engine (retries, task runs in the UI);
    called as plain Python, outside any flow, it runs its function directly.
    """
    call: Callable[P, R] = fn
    if isinstance(fn, Task) and FlowRunContext.get() is None:
        call = fn.fn
    start = time.perf_counter()
    try:
        return call(*a, **k)
    finally:
        timings[stage] = round(time.perf_counter() - start, 4)


def ensure_output_tables(engine: sa.Engine, wh: Warehouse) -> None:
    """Create or migrate the output tables unless they are already at this release's version.

    A warehouse at the current version gets no DDL at all, so the job's role needs no
    CREATE privilege (PostgreSQL checks it for ``CREATE SCHEMA IF NOT EXISTS`` even when
    the schema exists). Raises :class:`~warehouse.migrate.SchemaVersionError` when the
    warehouse is at a newer version than this release knows.
    """
    if current_version(engine, wh) != SCHEMA_VERSION:
        init_db(engine, wh)


def score_day(settings: Settings, as_of: date, *, kind: str = "nightly") -> RunResult:
    """Score ``as_of`` and replace that day's list, recording the run in ``scoring_runs``.

    Holds the day's lock for the whole run, so two runs for the same day never both write;
    any failure is recorded as a failed run and the previous list stays untouched.
    """
    engine = engine_for(settings)
    try:
        check_connection(engine)
        wh = build_warehouse(settings)
        ensure_output_tables(engine, wh)
        abandoned = mark_abandoned_runs(engine, wh, stale_after=STALE_RUN_AFTER)
        if abandoned:
            log.warning("marked %d orphaned run(s) as abandoned", abandoned)
        with as_of_lock(engine, wh, as_of):
            run_id = start_run(engine, wh, kind=kind, as_of=as_of)
            return _score_locked(settings, engine, wh, as_of, run_id)
    finally:
        engine.dispose()


def _score_locked(
    settings: Settings, engine: sa.Engine, wh: Warehouse, as_of: date, run_id: str
) -> RunResult:
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    model_version: str | None = None
    quality: QualityReport | None = None
    data_quality: dict[str, Any] | None = None
    drift: dict[str, Any] | None = None
    warnings: list[str] = []
    started = time.perf_counter()
    try:
        with heartbeating(engine, wh, run_id):
            champion = _timed(
                timings, "load_model", with_retries(load_champion_task, settings), engine, wh
            )
            model_version = champion.version
            settings, differences = settings_for_champion(settings, champion)
            warnings += differences
            window = scoring_window(settings, as_of)
            data = _timed(
                timings, "extract", with_retries(extract_task, settings), engine, wh, window
            )
            clean, quality = _timed(timings, "validate", validate_task, settings, data, window)
            del data  # the rows as read: free them before the features are built
            counts["quarantined"] = quality.n_quarantined
            features = _timed(timings, "features", features_task, settings, clean, champion, as_of)
            data_quality = {
                **quality.to_dict(),
                "features": _timed(
                    timings, "feature_quality", feature_quality_task, champion, features
                ),
            }
            warnings += [
                f"{name}: {rows:,} customer(s) with a value the champion never saw in training "
                "(scored as missing)"
                for name, rows in data_quality["features"]["unseen_categories"].items()
            ]
            scored = _timed(
                timings, "score", score_task, settings, champion, features, clean, window, run_id
            )
            timings.update({f"score.{k}": v for k, v in scored.timings.items()})
            counts.update({k.removeprefix("n_"): v for k, v in scored.counts.items()})
            warnings += scored.warnings
            verdict = _timed(timings, "drift", drift_task, settings, champion, features, scored)
            drift = verdict.to_dict() if verdict is not None else {"status": "unavailable"}
            if verdict is not None and verdict.status == "stop":
                raise DriftStop(verdict)
            if verdict is not None and verdict.status == "warn":
                warnings += [f"drift: {line}" for line in verdict.summary_lines()]
            timings["total_before_write"] = round(time.perf_counter() - started, 4)
            summary = RunSummary(
                model_version=model_version,
                counts=counts,
                timings=timings,
                data_quality=data_quality,
                drift=drift,
            )
            _timed(
                timings,
                "write",
                with_retries(write_task, settings),
                engine,
                wh,
                as_of,
                scored.rows,
                run_id,
                summary,
            )
    except BaseException as exc:
        timings["total"] = round(time.perf_counter() - started, 4)
        try:
            fail_run(
                engine,
                wh,
                run_id,
                error=exc,
                timings=timings,
                model_version=model_version,
                counts=counts or None,
                data_quality=data_quality or (quality.to_dict() if quality is not None else None),
                drift=drift,
            )
        except Exception as record_error:
            log.error("could not record failed run %s: %s", run_id, mask_secrets(str(record_error)))
        raise
    if quality.n_quarantined:
        warnings = [*quality.summary_lines(), *warnings]
    top = scored.rows.filter(pl.col("listed")).sort("rank").head(25)
    return RunResult(
        run_id=run_id,
        as_of=as_of,
        status="succeeded",
        model_version=model_version,
        counts=counts,
        timings=timings,
        warnings=warnings,
        drift=drift,
        top=top,
    )


def summary_markdown(result: RunResult) -> str:
    """The run's summary artifact: outcome, counts, stage timings, drift and warnings."""
    lines = [
        f"# Retention list for {result.as_of}",
        "",
        f"- run `{result.run_id}`: **{result.status}** with model `{result.model_version}`",
        *(f"- {name}: {value:,}" for name, value in result.counts.items()),
        "",
        "| stage | seconds |",
        "|---|---:|",
        *(f"| {stage} | {seconds:.2f} |" for stage, seconds in result.timings.items()),
    ]
    if result.drift is not None:
        lines += ["", f"## Drift: {result.drift.get('status', 'unavailable')}"]
        if result.drift.get("reason"):
            lines += ["", str(result.drift["reason"])]
        psi = result.drift.get("psi") or {}
        if psi.get(SCORE_KEY) is not None:
            levels = ", ".join(
                f"{level} at {value}"
                for level in ("warn", "stop")
                if (value := result.drift.get(f"{level}_threshold")) is not None
            )
            lines += ["", f"- score PSI: {psi[SCORE_KEY]:.3f}" + (f" ({levels})" if levels else "")]
        worst = sorted(
            (
                (name, value)
                for name, value in psi.items()
                if value is not None and name != SCORE_KEY
            ),
            key=lambda item: -item[1],
        )[:8]
        if result.drift.get("missing"):
            lines += ["", f"- missing tonight: {', '.join(result.drift['missing'])}"]
        if worst:
            lines += ["", "| feature | PSI |", "|---|---:|"]
            lines += [f"| {name} | {value:.3f} |" for name, value in worst]
    if result.warnings:
        lines += ["", "## Warnings", *(f"- {w}" for w in result.warnings)]
    return "\n".join(lines)


def publish_artifacts(result: RunResult) -> None:
    """A table artifact with the top of the list and a markdown summary (inside a flow run)."""
    if FlowRunContext.get() is None:
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = f"retention-list-{result.as_of.isoformat()}"
    if result.top is not None and result.top.height:
        columns = [
            "rank",
            "customer_id",
            "segment",
            "churn_probability",
            "value_at_risk",
            "priority",
            "reason_1",
            "recommended_action",
        ]
        create_table_artifact(
            table=result.top.select(columns).to_dicts(),
            key=key,
            description=f"Top of the retention list for {result.as_of}",
        )
    create_markdown_artifact(markdown=summary_markdown(result), key=f"{key}-summary")


@flow(name="nightly-score", log_prints=False)
def nightly_score(as_of: date | None = None, settings: Settings | None = None) -> RunResult:
    """Score every active customer as of ``as_of`` (default: today) and write the list."""
    settings = settings or Settings()
    day = as_of or today_in(settings.timezone)
    result = score_day(settings, day, kind="nightly")
    publish_artifacts(result)
    return result


@flow(name="backfill", log_prints=False)
def backfill(start: date, end: date, settings: Settings | None = None) -> list[RunResult]:
    """Score every date from ``start`` to ``end`` inclusive, oldest first.

    An ``end`` that has not begun is refused before any day is scored. The backfill stops at
    the first day that fails; the error then notes which days before it were written.
    """
    if end < start:
        raise ValueError(f"backfill end {end} is before start {start}")
    settings = settings or Settings()
    check_day_has_begun(end, settings.timezone, datetime.now(UTC), "backfill")
    results: list[RunResult] = []
    day = start
    while day <= end:
        try:
            result = score_day(settings, day, kind="backfill")
        except Exception as exc:
            if results:
                written = f"{start} to {day - timedelta(days=1)}"
                exc.add_note(f"the backfill stopped at {day}; {written} are written")
            raise
        publish_artifacts(result)
        results.append(result)
        day += timedelta(days=1)
    return results
