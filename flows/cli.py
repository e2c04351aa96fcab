"""The ``retention`` command line.

Every command builds the one :class:`~warehouse.settings.Settings` object at entry
(environment, optional TOML file, command options) and passes it down. Expected
failures (warehouse down, contract broken, another run in progress, no champion
model, a database error such as a lost connection or a missing grant) end with a
one-line message and a non-zero exit code, not a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.runtime import DEMO_DAYS

app = typer.Typer(
    name="retention",
    help="Find the customers most likely to leave, say why, and hand the team a ranked list.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="Inspect, promote and roll back registered models.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

WarehouseOpt = Annotated[
    str | None,
    typer.Option(
        "--warehouse",
        help="Warehouse URL (default: RETENTION_WAREHOUSE_URL, else sqlite:///retention.db).",
        show_default=False,
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of", help="Reference date YYYY-MM-DD (default: today in the configured zone)."
    ),
]


def _plain(value: object) -> str:
    """``value`` as text that the console prints as it is (brackets are not markup)."""
    from rich.markup import escape

    return escape(str(value))


class CliError(Exception):
    """An expected failure: printed as one line, exit code 1."""


class SettingError(Exception):
    """A setting that cannot work, found before a run: a configuration error, exit code 2."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from features.build import FutureDateError
    from models.actions import ActionRulesError
    from models.drift import DriftStop
    from models.nightly import NoActiveCustomersError
    from models.registry import RegistryError
    from models.train import FeatureMismatchError
    from warehouse.contract import ContractError
    from warehouse.db import WarehouseUnavailable
    from warehouse.demo import WarehouseNotEmptyError
    from warehouse.io import UnreadableValuesError
    from warehouse.migrate import SchemaVersionError
    from warehouse.outputs import DayLockLost, ListRowsError, ListWriteError, RunInProgress
    from warehouse.validate import NoCustomersError

    return (
        ActionRulesError,
        DriftStop,
        FutureDateError,
        NoActiveCustomersError,
        NoCustomersError,
        DayLockLost,
        ListRowsError,
        ListWriteError,
        CliError,
        ContractError,
        WarehouseUnavailable,
        RunInProgress,
        RegistryError,
        FeatureMismatchError,
        SchemaVersionError,
        UnreadableValuesError,
        WarehouseNotEmptyError,
    )


@contextmanager
def _friendly_errors() -> Iterator[None]:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from warehouse.db import UnsupportedWarehouseError
    from warehouse.schema import TableNameConflictError
    from warehouse.settings import ConfigFileError, describe_settings_error, mask_secrets

    try:
        yield
    except ValidationError as exc:
        text = describe_settings_error(exc) if exc.title == "Settings" else str(exc)
        err.print(f"[red]configuration error:[/red] {_plain(mask_secrets(text))}", highlight=False)
        raise typer.Exit(2) from None
    except (
        ConfigFileError,
        SettingError,
        SettingsError,
        UnsupportedWarehouseError,
        TableNameConflictError,
    ) as exc:
        err.print(
            f"[red]configuration error:[/red] {_plain(mask_secrets(str(exc)))}", highlight=False
        )
        raise typer.Exit(2) from None
    except _expected_errors() as exc:
        # Notes (PEP 678) add context such as the days a stopped backfill already wrote.
        text = "; ".join([str(exc), *getattr(exc, "__notes__", ())])
        err.print(f"[red]error:[/red] {_plain(mask_secrets(text))}", highlight=False)
        raise typer.Exit(1) from None
    except _database_errors() as exc:
        err.print(
            f"[red]error:[/red] database error: {_plain(_database_reason(exc))}", highlight=False
        )
        raise typer.Exit(1) from None


def _database_errors() -> tuple[type[BaseException], ...]:
    """Errors the database or its driver raised: a lost connection, a missing grant, ..."""
    import sqlite3

    import adbc_driver_manager
    import sqlalchemy as sa

    return (sa.exc.DBAPIError, adbc_driver_manager.Error, sqlite3.Error)


def _database_reason(exc: BaseException) -> str:
    """The driver's first line (without the statement), passwords masked."""
    from warehouse.settings import mask_secrets

    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return mask_secrets(lines[0] if lines else type(cause).__name__)


def _settings(warehouse: str | None = None, **overrides: Any) -> Any:
    from warehouse.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if warehouse is not None:
        values["warehouse_url"] = warehouse
    return Settings(**values)


def _check_in_range(option: str, field: str, value: int | None) -> None:
    """A command option that sets a setting obeys the setting's bounds (named as the option)."""
    from warehouse.settings import Settings

    if value is None:
        return
    metadata = Settings.model_fields[field].metadata
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    if (low is not None and value < low) or (high is not None and value > high):
        raise CliError(f"{option} must be from {low} to {high}, got {value}")


def _parse_date(value: str | None, what: str = "--as-of") -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CliError(f"{what} must be a date like 2026-11-22, got {value!r}") from None


def _run(fn: Callable[[], None]) -> None:
    with _friendly_errors():
        fn()


def _preflight(settings: Any) -> None:
    """Check before a flow starts: the action rules load, the artifacts directory can be
    created, the warehouse is reachable and its output tables are at this version.

    Any of these then ends the command with one line, before a Prefect flow run (and its
    temporary API server) is started for nothing, and before training registers a model
    whose report it could not write.
    """
    from models.actions import load_action_rules
    from warehouse.db import check_connection, engine_for
    from warehouse.schema import build_warehouse

    load_action_rules(settings.actions_file)
    try:
        settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError(
            f"artifacts_dir (RETENTION_ARTIFACTS_DIR) {settings.artifacts_dir} cannot be used as "
            f"a directory: {exc.strerror or exc}"
        ) from None

    _check_prefect_api()
    engine = engine_for(settings)
    try:
        check_connection(engine, must_exist=True)
        from flows.nightly import ensure_output_tables

        ensure_output_tables(engine, build_warehouse(settings))
    finally:
        engine.dispose()


def _check_prefect_api() -> None:
    """A configured Prefect API (``PREFECT_API_URL``) answers its health check.

    Without one, the flow starts a temporary local server and there is nothing to check.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    from warehouse.settings import mask_secrets

    api = get_current_settings().api.url
    if not api:
        return
    with get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
    if problem is not None:
        raise CliError(
            f"cannot reach the Prefect API at {mask_secrets(api)}: {problem}; start the server, "
            "or unset PREFECT_API_URL to run with a temporary local one"
        )


def _output_tables(settings: Any) -> tuple[Any, Any]:
    """The engine and tables for a command that reads or changes the output tables.

    One line instead of a driver error when the warehouse is down, the output tables do not
    exist yet, or a newer release migrated them.
    """
    from warehouse.db import check_connection, engine_for
    from warehouse.migrate import require_known_schema
    from warehouse.schema import build_warehouse

    engine = engine_for(settings)
    check_connection(engine, must_exist=True)
    wh = build_warehouse(settings)
    if require_known_schema(engine, wh) is None:
        raise CliError(
            f"the output tables do not exist yet in {settings.display_url}: run "
            "`retention init-db`, or score a day first"
        )
    return engine, wh


# -- warehouse ---------------------------------------------------------------------------------


@app.command("init-db")
def init_db_cmd(warehouse: WarehouseOpt = None) -> None:
    """Create the output tables (idempotent) and record the schema version."""

    def go() -> None:
        from warehouse.db import check_connection, engine_for
        from warehouse.migrate import init_db
        from warehouse.schema import build_warehouse

        settings = _settings(warehouse)
        engine = engine_for(settings)
        check_connection(engine)
        version = init_db(engine, build_warehouse(settings))
        out.print(f"output tables ready in {settings.display_url} (schema version {version})")

    _run(go)


@app.command("demo-data")
def demo_data_cmd(
    customers: Annotated[int, typer.Option(min=10, help="Number of customers.")] = 10_000,
    days: Annotated[
        int,
        typer.Option(
            min=30,
            help="Days of history (the default covers 12 monthly training snapshots, each "
            "with its 90-day lookback and 30-day horizon).",
        ),
    ] = DEMO_DAYS,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same data.")] = 7,
    end: Annotated[
        str | None, typer.Option(help="History ends the day before this date (default: today).")
    ] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Write a realistic synthetic warehouse (source tables) and print its summary."""

    def go() -> None:
        from flows.runtime import load_demo_warehouse, today_in

        settings = _settings(warehouse)
        end_date = _parse_date(end, "--end") or today_in(settings.timezone)
        summary = load_demo_warehouse(
            settings, customers=customers, days=days, seed=seed, end=end_date
        )
        _print_summary(settings.display_url, summary)

    _run(go)


@app.command("check")
def check_cmd(warehouse: WarehouseOpt = None) -> None:
    """Check the warehouse: connection, source contract, output tables; print a summary."""

    def go() -> None:
        from warehouse.contract import check_contract
        from warehouse.db import check_connection, engine_for
        from warehouse.demo import warehouse_summary
        from warehouse.migrate import require_known_schema
        from warehouse.schema import SCHEMA_VERSION, build_warehouse

        settings = _settings(warehouse)
        engine = engine_for(settings)
        check_connection(engine, must_exist=True)
        wh = build_warehouse(settings)
        check_contract(engine, wh)
        version = require_known_schema(engine, wh)
        _print_summary(settings.display_url, warehouse_summary(engine, wh))
        if version is None:
            out.print("  output tables: not created yet (`retention init-db` or the first run)")
        else:
            out.print(f"  output tables: schema version {version} (this release: {SCHEMA_VERSION})")

    _run(go)


def _print_summary(url: str, summary: dict[str, Any]) -> None:
    out.print(f"[bold]warehouse[/bold] {url}")
    for key, value in summary.items():
        if isinstance(value, dict):
            out.print(f"  {key}:")
            for k, v in value.items():
                out.print(f"    {k}: {_plain(v)}", highlight=False)
        else:
            out.print(f"  {key}: {_plain(value)}", highlight=False)


# -- training and models -------------------------------------------------------------------------


@app.command("train")
def train_cmd(
    as_of: AsOfOpt = None,
    snapshots: Annotated[
        int | None,
        typer.Option(
            help="Monthly training snapshots, at least 4: 2 holdout, 1 validation, 1 or more "
            "to fit on (default: the setting, 12)."
        ),
    ] = None,
    horizon_days: Annotated[
        int | None, typer.Option(help="Churn horizon in days (default: the setting, 30).")
    ] = None,
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="Promote when the gate is passed.")
    ] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Train a challenger on point-in-time snapshots, evaluate it, register it, maybe promote it."""

    def go() -> None:
        _check_in_range("--snapshots", "n_snapshots", snapshots)
        _check_in_range("--horizon-days", "horizon_days", horizon_days)
        day = _parse_date(as_of)
        settings = _settings(warehouse, n_snapshots=snapshots, horizon_days=horizon_days)
        _preflight(settings)
        from flows.retrain import retrain

        with _training_failures("training failed"):
            result = retrain(
                as_of=day,
                snapshots=snapshots,
                horizon_days=horizon_days,
                promote=promote,
                settings=settings,
            )
        _print_training(result)

    _run(go)


@contextmanager
def _no_traceback_in_flow_logs(expected: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Prefect logs a failed flow or task run's exception with its traceback; for the errors
    this command reports in one line, keep the log line but drop the traceback."""
    import logging

    class DropTraceback(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], expected):
                record.exc_info = None
                record.exc_text = None
            return True

    loggers = [logging.getLogger(name) for name in ("prefect.flow_runs", "prefect.task_runs")]
    drop = DropTraceback()
    for logger in loggers:
        logger.addFilter(drop)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)


@contextmanager
def _training_failures(what: str) -> Iterator[None]:
    """Data or requests training cannot handle end the command as ``error: <what>: ...``."""
    expected = _training_errors()
    try:
        with _no_traceback_in_flow_logs(expected):
            yield
    except expected as exc:
        raise CliError(f"{what}: {exc}") from None


def _training_errors() -> tuple[type[BaseException], ...]:
    """What training raises for data or requests it cannot train on (not bugs)."""
    from models.baseline import BaselineError
    from models.calibration import CalibrationError
    from models.encoding import FeatureError
    from models.evaluate import EvaluationError
    from models.retraining import TrainingPlanError
    from models.train import TrainingDataError

    return (
        TrainingPlanError,
        TrainingDataError,
        EvaluationError,
        BaselineError,
        CalibrationError,
        FeatureError,
    )


def _print_training(result: Any) -> None:
    for warning in getattr(result, "warnings", []):
        err.print(f"[yellow]warning:[/yellow] {_plain(warning)}", highlight=False)
    out.print(f"[bold]model[/bold] {result.version}  ({result.decision})")
    table = Table(title="holdout metrics (same rows)")
    table.add_column("metric")
    for name in result.comparison:
        table.add_column(name, justify="right")
    metrics = next(iter(result.comparison.values())).keys()
    for metric in metrics:
        # Counts and money as whole numbers; rates and scores with four decimals.
        whole = metric.startswith("n_") or metric == "best_k" or "profit" in metric
        values = (_fmt(result.comparison[n].get(metric), whole=whole) for n in result.comparison)
        table.add_row(metric, *values)
    out.print(table)
    if result.report_path:
        out.print(f"report: {result.report_path}")


def _count(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _fmt(value: Any, *, whole: bool = False) -> str:
    if whole and isinstance(value, int | float):
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return "" if value is None else str(value)


@models_app.command("list")
def models_list_cmd(warehouse: WarehouseOpt = None) -> None:
    """List registered models, newest first."""

    def go() -> None:
        from models.registry import list_models

        settings = _settings(warehouse)
        engine, wh = _output_tables(settings)
        rows = list_models(engine, wh)
        if not rows:
            out.print("no registered models (train one with `retention train`)")
            return
        out.print(
            f"{'model_version':<34} {'status':<10} {'created_at':<19} {'trained_to':<10} "
            f"{'pr_auc':>7} {'roc_auc':>7}"
        )
        for row in rows:
            metrics = row.get("metrics") or {}
            model_metrics = metrics.get("model", metrics)
            out.print(
                f"{row['model_version']!s:<34} {row['status']!s:<10} "
                f"{str(row['created_at'])[:19]:<19} {row['training_end']!s:<10} "
                f"{_fmt(model_metrics.get('pr_auc')):>7} {_fmt(model_metrics.get('roc_auc')):>7}",
                highlight=False,
            )

    _run(go)


@models_app.command("show")
def models_show_cmd(version: str, warehouse: WarehouseOpt = None) -> None:
    """Show one model's metadata and metrics (not the booster text)."""

    def go() -> None:
        from models.registry import describe_model

        settings = _settings(warehouse)
        engine, wh = _output_tables(settings)
        info = describe_model(engine, wh, version)
        metrics = info.get("metrics")
        warnings = metrics.get("warnings") if isinstance(metrics, dict) else None
        for warning in warnings or []:
            err.print(f"[yellow]warning:[/yellow] {_plain(warning)}", highlight=False)
        out.print_json(json.dumps(info, default=str))

    _run(go)


@models_app.command("promote")
def models_promote_cmd(version: str, warehouse: WarehouseOpt = None) -> None:
    """Make VERSION the champion (the current champion is retired)."""

    def go() -> None:
        from models.registry import promote

        settings = _settings(warehouse)
        engine, wh = _output_tables(settings)
        promote(engine, wh, version)
        out.print(f"{version} is now the champion")

    _run(go)


@models_app.command("rollback")
def models_rollback_cmd(warehouse: WarehouseOpt = None) -> None:
    """Retire the champion and restore the previous one."""

    def go() -> None:
        from models.registry import rollback

        settings = _settings(warehouse)
        engine, wh = _output_tables(settings)
        version = rollback(engine, wh)
        out.print(f"rolled back: {version} is the champion again")

    _run(go)


# -- scoring -------------------------------------------------------------------------------------


@app.command("score")
def score_cmd(as_of: AsOfOpt = None, warehouse: WarehouseOpt = None) -> None:
    """Run the nightly job: score every active customer and write the ranked list."""

    def go() -> None:
        settings = _settings(warehouse)
        day = _parse_date(as_of)
        _preflight(settings)
        from flows.nightly import nightly_score

        with _no_traceback_in_flow_logs(_expected_errors()):
            result = nightly_score(as_of=day, settings=settings)
        _print_run(result)

    _run(go)


@app.command("backfill")
def backfill_cmd(
    start: Annotated[str, typer.Argument(help="First as_of date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Argument(help="Last as_of date, YYYY-MM-DD (inclusive).")],
    warehouse: WarehouseOpt = None,
) -> None:
    """Score every date from START to END inclusive (each date replaces its own list)."""

    def go() -> None:
        settings = _settings(warehouse)
        first, last = _parse_date(start, "START"), _parse_date(end, "END")
        assert first is not None and last is not None
        if last < first:
            raise CliError(f"END {last} is before START {first}")
        from features.build import check_day_has_begun

        check_day_has_begun(last, settings.timezone, datetime.now(UTC), "backfill")
        _preflight(settings)
        from flows.nightly import backfill

        with _no_traceback_in_flow_logs(_expected_errors()):
            results = backfill(start=first, end=last, settings=settings)
        for result in results:
            _print_run(result)

    _run(go)


def _print_run(result: Any) -> None:
    for line in result.warnings:
        err.print(f"[yellow]warning:[/yellow] {_plain(line)}", highlight=False)
    out.print(
        f"[bold]{result.as_of}[/bold] run {result.run_id}: {result.status}; "
        f"scored {result.counts.get('scored', 0):,}, listed {result.counts.get('listed', 0):,}, "
        f"cooled down {result.counts.get('cooled_down', 0):,}, "
        f"quarantined {result.counts.get('quarantined', 0):,}; model {result.model_version}",
        highlight=False,
    )


@app.command("list")
def list_cmd(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Day YYYY-MM-DD (default: the latest day with a list)."),
    ] = None,
    top: Annotated[
        int,
        typer.Option(
            min=1,
            help="How many listed customers to show (customers in their cool-down period or "
            "over their segment's cap keep their rank but are not listed).",
        ),
    ] = 20,
    segment: Annotated[str | None, typer.Option(help="Only this segment.")] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Print the ranked retention list (default: the latest day)."""

    def go() -> None:
        from warehouse.outputs import read_retention_list

        settings = _settings(warehouse)
        day = _parse_date(as_of)
        engine, wh = _output_tables(settings)
        frame = read_retention_list(
            engine,
            wh,
            as_of=day,
            top=top,
            segment=segment,
        )
        which = as_of or "the latest day"
        if segment is not None:
            empty = f"no listed customers in segment {segment!r} for {which}"
        else:
            empty = f"no listed customers for {which} (has `retention score` run?)"
        _print_list(frame, empty=empty, by_segment=segment is not None)

    _run(go)


def _print_list(
    frame: Any, *, empty: str = "no listed customers for that day", by_segment: bool = False
) -> None:
    if frame.height == 0:
        out.print(_plain(empty), highlight=False)
        return
    out.print(f"[bold]retention list for {frame['as_of'][0]}[/bold]")
    for row in frame.iter_rows(named=True):
        out.print(
            f"[bold]#{row['rank']}[/bold] customer {row['customer_id']}"
            f"  {_plain(row['segment'] or 'no segment')}"
            f"  churn {row['churn_probability']:.0%}"
            f"  value at risk {row['value_at_risk']:,.0f}"
            f"  [{_PRIORITY_STYLE.get(row['priority'], '')}]{row['priority']}[/]",
            highlight=False,
        )
        for i in (1, 2, 3):
            if row.get(f"reason_{i}"):
                out.print(f"    why: {_plain(row[f'reason_{i}'])}", highlight=False)
        if row.get("recommended_action"):
            out.print(f"    do:  {_plain(row['recommended_action'])}", highlight=False)
    shown = frame["rank"].to_list()
    skipped = max(shown) - len(shown)
    if skipped and not by_segment:
        out.print(
            f"({skipped:,} customer(s) ranked above #{max(shown)} are not listed: in their "
            "cool-down period, or over their segment's cap)",
            highlight=False,
        )


_PRIORITY_STYLE = {"high": "bold red", "medium": "yellow", "low": "dim"}


@app.command("runs")
def runs_cmd(
    limit: Annotated[int, typer.Option(min=1, help="How many runs to show, newest first.")] = 10,
    warehouse: WarehouseOpt = None,
) -> None:
    """Show the latest runs recorded in scoring_runs."""

    def go() -> None:
        from warehouse.outputs import latest_runs

        settings = _settings(warehouse)
        engine, wh = _output_tables(settings)
        frame = latest_runs(engine, wh, limit=limit)
        if frame.height == 0:
            out.print("no runs recorded yet")
            return
        out.print(
            f"{'run_id':<12} {'kind':<9} {'as_of':<10} {'status':<10} {'started_at':<19} "
            f"{'scored':>9} {'listed':>7} {'quarantined':>11}  model_version"
        )
        for row in frame.iter_rows(named=True):
            out.print(
                f"{row['run_id'][:12]:<12} {row['kind']:<9} {row['as_of']!s:<10} "
                f"{row['status']:<10} {str(row['started_at'])[:19]:<19} "
                f"{_count(row['n_scored']):>9} {_count(row['n_listed']):>7} "
                f"{_count(row['n_quarantined']):>11}  {row['model_version'] or ''}",
                highlight=False,
            )
            if row.get("error"):
                out.print(f"    error: {_plain(row['error'])}", highlight=False)

    _run(go)


@app.command("demo")
def demo_cmd(
    customers: Annotated[
        int, typer.Option(min=1000, help="Demo customers when generating.")
    ] = 10_000,
    top: Annotated[int, typer.Option(min=1, help="How many listed customers to show.")] = 15,
    warehouse: WarehouseOpt = None,
) -> None:
    """Demo data if empty, train if there is no champion, score today, show the list."""

    def go() -> None:
        from flows.runtime import prepare_demo

        settings = _settings(warehouse)
        with _training_failures("training the demo model failed"):
            for line in prepare_demo(settings, customers=customers):
                out.print(_plain(line), highlight=False)
        from flows.nightly import nightly_score

        with _no_traceback_in_flow_logs(_expected_errors()):
            result = nightly_score(as_of=None, settings=settings)
        _print_run(result)
        from warehouse.db import engine_for
        from warehouse.outputs import read_retention_list
        from warehouse.schema import build_warehouse

        frame = read_retention_list(
            engine_for(settings), build_warehouse(settings), as_of=result.as_of, top=top
        )
        _print_list(frame)

    _run(go)


@app.command("bench")
def bench_cmd(
    tier: Annotated[str, typer.Option(help="S (10k), M (100k) or L (1M customers).")] = "S",
    backend: Annotated[str, typer.Option(help="sqlite or postgres.")] = "sqlite",
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline/--no-baseline", help="Also run the naive pandas baseline on the same data."
        ),
    ] = True,
    output: Annotated[Path | None, typer.Option(help="Results directory.")] = None,
) -> None:
    """Benchmark the nightly job and training at a size tier (see bench/README.md)."""

    def go() -> None:
        from bench.harness import run_benchmark

        if tier not in ("S", "M", "L"):
            raise CliError(f"--tier must be S, M or L, got {tier!r}")
        if backend not in ("sqlite", "postgres"):
            raise CliError(f"--backend must be sqlite or postgres, got {backend!r}")
        result = run_benchmark(tier=tier, backend=backend, baseline=baseline, results_dir=output)
        out.print_json(json.dumps(result, default=str))

    _run(go)


def main() -> None:
    """Console-script entry point."""
    # LightGBM's OpenMP threads busy-wait by default, which slows training badly on a
    # loaded machine; PASSIVE must be in the environment before lightgbm is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Without a Prefect server configured, the first flow starts a temporary local API; give it
    # time on a loaded machine, and keep it from calling home.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
