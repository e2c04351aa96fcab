"""The benchmark harness: the nightly job and training per size tier, beside a naive baseline
and the I/O floor, all on the same warehouse in the same run.

    retention bench --tier M --backend postgres            # CLI (flows/cli.py)
    python -m bench.harness prepare --tier M --backend postgres   # only build the warehouse
    python -m bench.harness table                           # markdown table of bench/results

One run:

1. **Warehouse** for the tier, reused across runs: a SQLite file under ``bench/data/`` or a
   PostgreSQL database ``retention_bench_<tier>``. A marker table (:data:`MARKER_TABLE`) records
   the customers, days, seed and end date of a complete load; without a matching marker the
   warehouse is rebuilt from the demo generator. A champion is trained once per warehouse.
   All of this happens in a child process, so its memory never counts against the job.
2. **Nightly job** for a day without a list yet (any earlier list of the benchmark day is
   deleted first, untimed, as a nightly run writes a new day):
   :func:`flows.nightly.score_day` end to end (``total_seconds`` and the
   process peak ``peak_rss_mb``), then the same library stages one by one (load_model, extract,
   validate, features, predict, prioritise, reasons, actions, assemble, write, and ``rewrite``:
   replacing that day's list once more, as a rerun of the same day does), each with its
   wall seconds, rows per second and peak resident memory.
3. **Training** (tiers up to :data:`TRAIN_MAX_CUSTOMERS` customers unless told otherwise):
   snapshots (extract + validate), features (+ labels), fit and evaluate on
   :data:`TRAIN_SNAPSHOTS` monthly snapshots. Nothing is registered: the champion stays fixed
   so every run scores with the same model.
4. **I/O floor** (:mod:`bench.io_floor`) and **naive baseline** (:mod:`bench.naive`), each in a
   child process with its own memory, measured on the same data.

The result goes to ``<results_dir>/<tier>-<backend>.json`` and a table to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import psutil
import sqlalchemy as sa

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DATA_DIR = REPO_ROOT / "bench" / "data"

TIERS: Mapping[str, int] = {"S": 10_000, "M": 100_000, "L": 1_000_000}
"""Customers per size tier."""
BACKENDS = ("sqlite", "postgres")

DEMO_DAYS = 455
"""Days of history: :data:`TRAIN_SNAPSHOTS` monthly snapshots with a full 90-day lookback need
horizon + 11 * spacing + lookback = 30 + 330 + 90 = 450 days; 5 more spare."""
DEMO_SEED = 7
DEMO_END = date(2026, 11, 1)
"""The demo history ends before this day; the job scores it (as_of = end), so reruns compare."""

TRAIN_SNAPSHOTS = 12
"""Monthly snapshots of the measured training section."""
TRAIN_MAX_CUSTOMERS = 100_000
"""Largest tier whose training is measured by default (L trains its champion once, smaller)."""
CHAMPION_SNAPSHOTS_LARGE = 4
"""Snapshots for the one-off champion of warehouses above ``TRAIN_MAX_CUSTOMERS`` customers."""

BASELINE_TIMEOUT_SECONDS = 1800.0
"""The naive baseline is stopped (and reported as null with the reason) after this long."""

PG_SERVER_URL_ENV = "RETENTION_BENCH_POSTGRES_URL"
DEFAULT_PG_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARKER_TABLE = "bench_marker"

NIGHTLY_STAGES = (
    "load_model",
    "extract",
    "validate",
    "features",
    "predict",
    "prioritise",
    "reasons",
    "actions",
    "assemble",
    "write",
    "rewrite",
)
TRAINING_STAGES = ("train.snapshots", "train.features", "train.fit", "train.evaluate")

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def rss_mb() -> float:
    """Current resident set size of this process in MB."""
    return float(psutil.Process().memory_info().rss) / (1024 * 1024)


def process_peak_rss_mb() -> float:
    """Peak resident set size of this process so far in MB (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class RssSampler:
    """Samples this process's RSS in a background thread; ``peak_mb`` is the largest seen."""

    def __init__(self, interval_seconds: float = 0.02) -> None:
        self.interval_seconds = interval_seconds
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()

    def _sample(self) -> None:
        value = float(self._process.memory_info().rss) / (1024 * 1024)
        self.peak_mb = max(self.peak_mb, value)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self._sample()

    def __enter__(self) -> RssSampler:
        self.peak_mb = 0.0
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def child_main(
    argv: list[str] | None,
    *,
    prog: str,
    description: str | None,
    measure: Callable[[str, date], dict[str, Any]],
) -> None:
    """Command line of a measurement run in its own process (naive baseline, I/O floor).

    Runs ``measure(url, as_of)`` under an RSS sampler and prints (or writes) the result as
    JSON with its own ``peak_rss_mb``.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--url", required=True, help="warehouse URL")
    parser.add_argument("--as-of", type=date.fromisoformat, required=True)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    with RssSampler() as sampler:
        result = measure(args.url, args.as_of)
    result["peak_rss_mb"] = round(sampler.peak_mb, 1)
    text = json.dumps(result)
    if args.json_out:
        args.json_out.write_text(text, encoding="utf-8")
    else:
        print(text)


@dataclass
class StageLog:
    """Seconds, rows, rows per second and peak RSS of each measured stage, in order."""

    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    def measure(self, name: str, step: Callable[[], T], rows: Callable[[T], int] | int) -> T:
        """Run ``step`` as stage ``name``; ``rows`` is its row count or computes it."""
        with RssSampler() as sampler:
            started = time.perf_counter()
            result = step()
            seconds = time.perf_counter() - started
        n_rows = rows if isinstance(rows, int) else rows(result)
        self.stages[name] = stage_record(seconds, n_rows, sampler.peak_mb)
        return result


def stage_record(seconds: float, rows: int | None, peak_rss_mb: float | None) -> dict[str, Any]:
    """One stage's entry of the result's ``stages``."""
    return {
        "seconds": round(seconds, 4),
        "rows": rows,
        "rows_per_s": round(rows / seconds) if rows is not None and seconds > 0 else None,
        "peak_rss_mb": None if peak_rss_mb is None else round(peak_rss_mb, 1),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for package in (
        "polars",
        "pyarrow",
        "lightgbm",
        "numpy",
        "pandas",
        "sqlalchemy",
        "psycopg",
        "adbc-driver-postgresql",
        "adbc-driver-sqlite",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(engine: sa.Engine | None = None) -> dict[str, Any]:
    """Cores, memory, CPU model, OS, Python, library versions and the load average now."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
        "cpu_model": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "libraries": _versions(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if engine is not None and engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            info["postgres"] = str(conn.exec_driver_sql("SHOW server_version").scalar_one())
    return info


# --------------------------------------------------------------------------------------------
# Warehouses per tier
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchWarehouse:
    """Where one tier's demo warehouse lives and what it must hold."""

    tier: str
    backend: str
    customers: int
    days: int
    seed: int
    end: date
    url: str

    @property
    def label(self) -> str:
        """``<tier>-<backend>``, with the customer count when it is not the tier's own."""
        base = f"{self.tier}-{self.backend}"
        return base if self.customers == TIERS[self.tier] else f"{base}-{self.customers}"


def _database_name(tier: str, customers: int) -> str:
    suffix = "" if customers == TIERS[tier] else f"_{customers}"
    return f"retention_bench_{tier.lower()}{suffix}"


def bench_warehouse(
    tier: str,
    backend: str,
    *,
    customers: int | None = None,
    days: int = DEMO_DAYS,
    data_dir: Path | None = None,
) -> BenchWarehouse:
    """The warehouse location for a tier and backend (a tier name and backend are validated)."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    n = customers or TIERS[tier]
    if n < 100:
        raise ValueError(f"a benchmark warehouse needs at least 100 customers, got {n}")
    name = _database_name(tier, n)
    if backend == "sqlite":
        folder = data_dir or DATA_DIR
        url = f"sqlite:///{(folder / f'{name}.db').resolve()}"
    else:
        server = sa.make_url(os.environ.get(PG_SERVER_URL_ENV, DEFAULT_PG_SERVER_URL))
        url = server.set(database=name).render_as_string(hide_password=False)
    return BenchWarehouse(tier, backend, n, days, DEMO_SEED, DEMO_END, url)


def _marker_table() -> sa.Table:
    return sa.Table(
        MARKER_TABLE,
        sa.MetaData(),
        sa.Column("customers", sa.Integer, nullable=False),
        sa.Column("days", sa.Integer, nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("rows", sa.Text, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    )


def read_marker(engine: sa.Engine) -> dict[str, Any] | None:
    """The marker of a complete demo load, or None when there is none."""
    table = _marker_table()
    if not sa.inspect(engine).has_table(table.name):
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(table)).mappings().first()
    if row is None:
        return None
    marker = dict(row)
    marker["rows"] = json.loads(marker["rows"])
    return marker


def _marker_matches(marker: Mapping[str, Any] | None, target: BenchWarehouse) -> bool:
    return marker is not None and (
        marker["customers"],
        marker["days"],
        marker["seed"],
        marker["end_date"],
    ) == (target.customers, target.days, target.seed, target.end)


def _write_marker(engine: sa.Engine, target: BenchWarehouse, rows: Mapping[str, int]) -> None:
    table = _marker_table()
    table.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
        conn.execute(
            sa.insert(table).values(
                customers=target.customers,
                days=target.days,
                seed=target.seed,
                end_date=target.end,
                rows=json.dumps(dict(rows)),
                loaded_at=datetime.now(UTC),
            )
        )


def _server_engine() -> sa.Engine:
    from warehouse.db import engine_for_url

    url = os.environ.get(PG_SERVER_URL_ENV, DEFAULT_PG_SERVER_URL)
    return engine_for_url(url).execution_options(isolation_level="AUTOCOMMIT")


def _reset_storage(target: BenchWarehouse) -> None:
    """An empty database (or SQLite file) for the target."""
    if target.backend == "sqlite":
        path = Path(sa.make_url(target.url).database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        return
    name = sa.make_url(target.url).database or ""
    server = _server_engine()
    try:
        quoted = server.dialect.identifier_preparer.quote(name)
        with server.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        server.dispose()


def _storage_exists(target: BenchWarehouse) -> bool:
    if target.backend == "sqlite":
        return Path(sa.make_url(target.url).database or "").exists()
    name = sa.make_url(target.url).database or ""
    server = _server_engine()
    try:
        with server.connect() as conn:
            found = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
        return found is not None
    finally:
        server.dispose()


def bench_settings(url: str, artifacts_dir: Path) -> Any:
    """Settings for a benchmark warehouse (defaults otherwise)."""
    from pydantic import SecretStr

    from warehouse.settings import Settings

    return Settings(warehouse_url=SecretStr(url), artifacts_dir=artifacts_dir)


def prepare_warehouse(target: BenchWarehouse, artifacts_dir: Path) -> dict[str, Any]:
    """Make the tier's warehouse ready: demo data loaded (or reused) and a champion.

    Returns what was done: ``reused`` (bool), ``load_seconds``, ``rows`` per source table,
    ``champion_seconds`` (null when a champion existed).
    """
    from flows.retrain import train_and_register
    from flows.runtime import load_demo_warehouse
    from models.registry import NoChampionError, load_model, promote
    from warehouse.db import engine_for_url
    from warehouse.migrate import init_db
    from warehouse.schema import build_warehouse

    settings = bench_settings(target.url, artifacts_dir)
    marker = None
    if _storage_exists(target):
        engine = engine_for_url(target.url)
        try:
            marker = read_marker(engine)
        finally:
            engine.dispose()
    done: dict[str, Any] = {"reused": _marker_matches(marker, target), "load_seconds": None}
    if not done["reused"]:
        _reset_storage(target)
        started = time.perf_counter()
        summary = load_demo_warehouse(
            settings, customers=target.customers, days=target.days, seed=target.seed, end=target.end
        )
        done["load_seconds"] = round(time.perf_counter() - started, 2)
        engine = engine_for_url(target.url)
        try:
            _write_marker(engine, target, summary["rows"])
        finally:
            engine.dispose()
        marker = {"rows": summary["rows"]}
    assert marker is not None
    done["rows"] = marker["rows"]
    engine = engine_for_url(target.url)
    wh = build_warehouse(settings)
    try:
        init_db(engine, wh)
        load_model(engine, wh)
        done["champion_seconds"] = None
    except NoChampionError:
        snapshots = (
            TRAIN_SNAPSHOTS if target.customers <= TRAIN_MAX_CUSTOMERS else CHAMPION_SNAPSHOTS_LARGE
        )
        started = time.perf_counter()
        result = train_and_register(settings, target.end, snapshots=snapshots, promote=True)
        if not result.promoted:
            # The benchmark needs a model to score with, whatever the promotion gate decided.
            promote(engine, wh, result.version)
        done["champion_seconds"] = round(time.perf_counter() - started, 2)
        done["champion"] = {
            "version": result.version,
            "snapshots": snapshots,
            "rows": result.rows,
            "gate": result.decision,
        }
    finally:
        engine.dispose()
    return done


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------


def child_environment() -> dict[str, str]:
    """This environment with the repository importable and LightGBM's threads passive."""
    env = dict(os.environ)
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(module: str, args: list[str], timeout_seconds: float | None) -> dict[str, Any]:
    """Run ``python -m module args --json-out FILE``; return the JSON it wrote.

    On a failure or a timeout the result is ``{"status": "failed" | "timeout", "reason": ...}``.
    The child's wall time (process start included) is ``child_seconds``.
    """
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, "-m", module, *args, "--json-out", str(out)]
        started = time.perf_counter()
        try:
            completed = subprocess.run(  # noqa: S603 (this interpreter, our own modules)
                command,
                cwd=REPO_ROOT,
                env=child_environment(),
                capture_output=True,
                text=True,
                timeout=timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return {
                "status": "timeout",
                "reason": f"{module} did not finish within {timeout_seconds:.0f} s",
            }
        seconds = round(time.perf_counter() - started, 2)
        if completed.returncode != 0 or not out.exists():
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-5:]
            return {
                "status": "failed",
                "reason": f"{module} exited with {completed.returncode}: " + " | ".join(tail),
                "child_seconds": seconds,
            }
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    result.setdefault("status", "ok")
    result["child_seconds"] = seconds
    return result


# --------------------------------------------------------------------------------------------
# The nightly job and training, measured
# --------------------------------------------------------------------------------------------


def clear_day(settings: Any, as_of: date) -> None:
    """Delete the day's list (untimed), so a timed run writes a new day as a nightly run does.

    On PostgreSQL the table is vacuumed afterwards: the deleted rows of every earlier
    benchmark run would otherwise pile up as dead tuples and index entries that a nightly
    table (which only ever gains new days) does not have, and slow the timed write.
    """
    from warehouse.db import engine_for
    from warehouse.schema import build_warehouse

    engine = engine_for(settings)
    try:
        table = build_warehouse(settings)["retention_list"]
        if sa.inspect(engine).has_table(table.name, schema=table.schema):
            with engine.begin() as conn:
                conn.execute(sa.delete(table).where(table.c.as_of == as_of))
            if engine.dialect.name == "postgresql":
                name = engine.dialect.identifier_preparer.format_table(table)
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql(f"VACUUM ANALYZE {name}")
    finally:
        engine.dispose()


def measure_score_day(settings: Any, as_of: date) -> dict[str, Any]:
    """Run :func:`flows.nightly.score_day` once; its wall seconds, counts and own timings."""
    from flows.nightly import score_day

    with RssSampler() as sampler:
        started = time.perf_counter()
        result = score_day(settings, as_of, kind="bench")
        seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 4),
        "sampled_peak_rss_mb": round(sampler.peak_mb, 1),
        "process_peak_rss_mb": round(process_peak_rss_mb(), 1),
        "counts": dict(result.counts),
        "timings": dict(result.timings),
        "model_version": result.model_version,
        "run_id": result.run_id,
    }


def measure_nightly_stages(settings: Any, as_of: date, log: StageLog) -> dict[str, int]:
    """The nightly job's library stages one at a time into ``log``; returns row counts."""
    from models.actions import load_action_rules, recommend_actions
    from models.nightly import (
        extract_sources,
        scoring_features,
        scoring_window,
        settings_for_champion,
        validate_sources,
    )
    from models.prioritise import PrioritySettings, cooled_down_customers, prioritise
    from models.reasons import explain_listed
    from models.registry import load_model
    from models.scoring import score_customers
    from warehouse.db import engine_for
    from warehouse.outputs import (
        as_of_lock,
        build_list_rows,
        finish_run,
        replace_retention_list,
        start_run,
    )
    from warehouse.schema import build_warehouse

    engine = engine_for(settings)
    wh = build_warehouse(settings)
    try:
        with as_of_lock(engine, wh, as_of):
            run_id = start_run(engine, wh, kind="bench-stages", as_of=as_of)
            champion = log.measure("load_model", lambda: load_model(engine, wh), 1)
            settings, _differences = settings_for_champion(settings, champion)
            window = scoring_window(settings, as_of)
            data = log.measure(
                "extract",
                lambda: extract_sources(engine, wh, window),
                lambda d: sum(d.row_counts().values()),
            )
            source_rows = sum(data.row_counts().values())
            clean, _quality = log.measure(
                "validate", partial(validate_sources, settings, data, window), source_rows
            )
            del data
            features = log.measure(
                "features",
                lambda: scoring_features(settings, clean, champion, as_of),
                sum(clean.row_counts().values()),
            )
            scored = log.measure(
                "predict", lambda: score_customers(champion, features), features.height
            )
            config = PrioritySettings.from_settings(settings)
            prioritised = log.measure(
                "prioritise",
                lambda: prioritise(
                    scored,
                    cooled_down_customers(
                        clean.retention_contacts,
                        window.cutoff,
                        settings.cooldown_days,
                        timezone=settings.timezone,
                    ),
                    config,
                ),
                scored.height,
            )
            listed = prioritised.listed_customer_ids
            reasons = log.measure(
                "reasons", lambda: explain_listed(champion, features, listed), listed.len()
            )
            rules = load_action_rules(settings.actions_file)
            with_actions = log.measure(
                "actions", lambda: recommend_actions(rules, reasons), reasons.height
            )
            rows = log.measure(
                "assemble",
                lambda: build_list_rows(
                    prioritised.frame,
                    with_actions,
                    as_of=as_of,
                    model_version=champion.version,
                    run_id=run_id,
                ),
                prioritised.frame.height,
            )
            written = log.measure(
                "write",
                lambda: replace_retention_list(engine, wh, as_of, rows, run_id),
                rows.height,
            )
            log.measure(
                "rewrite",
                lambda: replace_retention_list(engine, wh, as_of, rows, run_id),
                rows.height,
            )
            finish_run(
                engine,
                wh,
                run_id,
                model_version=champion.version,
                counts={"scored": scored.height, "listed": int(listed.len())},
                timings={k: v["seconds"] for k, v in log.stages.items()},
            )
    finally:
        engine.dispose()
    return {
        "source_rows": source_rows,
        "scored": scored.height,
        "listed": int(listed.len()),
        "written": written,
    }


def measure_training(settings: Any, as_of: date, log: StageLog, snapshots: int) -> dict[str, Any]:
    """Training's stages into ``log`` (nothing registered); returns rows and metrics."""
    from models.retraining import (
        current_champion,
        evaluate_model,
        extract_training_sources,
        fit_model,
        fit_plan_to_history,
        labelled_features,
        training_plan,
        validate_training_sources,
    )
    from warehouse.db import engine_for
    from warehouse.schema import build_warehouse

    engine = engine_for(settings)
    wh = build_warehouse(settings)
    try:
        requested = training_plan(settings, as_of, n_snapshots=snapshots)

        def read_snapshots() -> Any:
            data = extract_training_sources(engine, wh, requested)
            clean, _quality = validate_training_sources(settings, data, requested)
            return clean, fit_plan_to_history(settings, requested, clean)

        clean, plan = log.measure(
            "train.snapshots", read_snapshots, lambda d: sum(d[0].row_counts().values())
        )
        champion = current_champion(engine, wh)
    finally:
        engine.dispose()
    frame = log.measure(
        "train.features",
        partial(labelled_features, settings, clean, plan, champion),
        sum(clean.row_counts().values()),
    )
    del clean
    model = log.measure("train.fit", lambda: fit_model(settings, frame), frame.frame.height)
    evaluation = log.measure(
        "train.evaluate",
        lambda: evaluate_model(settings, frame, model, champion),
        frame.frame.height,
    )
    report = evaluation.report
    return {
        "snapshots": len(plan.snapshots),
        "snapshots_requested": snapshots,
        "left_out_snapshots": [d.isoformat() for d in plan.left_out],
        "labelled_rows": frame.frame.height,
        "features": len(frame.features),
        "holdout_dates": [d.isoformat() for d in report.holdout_dates],
        "metrics": _json_safe(report.to_dict()["overall"]),
        "warnings": list(report.warnings),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        return _json_safe({k: getattr(value, k) for k in value.__dataclass_fields__})
    return str(value)


# --------------------------------------------------------------------------------------------
# One benchmark run
# --------------------------------------------------------------------------------------------


@contextmanager
def _passive_openmp() -> Iterator[None]:
    """LightGBM's OpenMP threads sleep instead of spinning (set before lightgbm loads)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    yield


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return round(numerator / denominator, 2)


def run_benchmark(
    *,
    tier: str,
    backend: str,
    baseline: bool = True,
    results_dir: Path | None = None,
    customers: int | None = None,
    train: bool | None = None,
    data_dir: Path | None = None,
    baseline_timeout_seconds: float = BASELINE_TIMEOUT_SECONDS,
    echo: bool = True,
) -> dict[str, Any]:
    """Benchmark the nightly job (and training) at ``tier`` on ``backend``; return the result.

    ``customers`` overrides the tier's size (small runs in tests; the warehouse and result
    file names then carry the count). ``train`` measures training (default: tiers up to
    :data:`TRAIN_MAX_CUSTOMERS` customers). The result is also written to
    ``<results_dir>/<label>.json`` (default ``bench/results``) and, with ``echo``, a table
    goes to stderr.
    """
    with _passive_openmp():
        return _run(
            tier=tier.upper(),
            backend=backend.lower(),
            baseline=baseline,
            results_dir=results_dir or RESULTS_DIR,
            customers=customers,
            train=train,
            data_dir=data_dir,
            baseline_timeout_seconds=baseline_timeout_seconds,
            echo=echo,
        )


def _run(
    *,
    tier: str,
    backend: str,
    baseline: bool,
    results_dir: Path,
    customers: int | None,
    train: bool | None,
    data_dir: Path | None,
    baseline_timeout_seconds: float,
    echo: bool,
) -> dict[str, Any]:
    target = bench_warehouse(tier, backend, customers=customers, data_dir=data_dir)
    machine = machine_info()
    artifacts = (data_dir or DATA_DIR) / "artifacts" / target.label
    artifacts.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        if echo:
            print(line, file=sys.stderr, flush=True)

    say(f"[bench {target.label}] preparing warehouse ({target.customers:,} customers)")
    prepared = run_child(
        "bench.harness",
        [
            "prepare",
            "--tier",
            tier,
            "--backend",
            backend,
            "--customers",
            str(target.customers),
            "--data-dir",
            str(data_dir or DATA_DIR),
            "--artifacts-dir",
            str(artifacts),
        ],
        timeout_seconds=None,
    )
    if prepared.get("status") != "ok":
        raise RuntimeError(f"preparing {target.label} failed: {prepared.get('reason')}")

    from warehouse.db import engine_for_url

    engine = engine_for_url(target.url)
    try:
        machine = {**machine, **machine_info(engine)}
    finally:
        engine.dispose()
    settings = bench_settings(target.url, artifacts)
    as_of = target.end

    say(f"[bench {target.label}] nightly job: score_day end to end")
    clear_day(settings, as_of)
    job = measure_score_day(settings, as_of)
    say(f"[bench {target.label}] nightly job: stage by stage")
    clear_day(settings, as_of)
    log = StageLog()
    counts = measure_nightly_stages(settings, as_of, log)

    run_training = train if train is not None else target.customers <= TRAIN_MAX_CUSTOMERS
    training: dict[str, Any] | None = None
    if run_training:
        say(f"[bench {target.label}] training on {TRAIN_SNAPSHOTS} monthly snapshots")
        training = measure_training(settings, as_of, log, TRAIN_SNAPSHOTS)
        training["total_seconds"] = round(sum(log.stages[s]["seconds"] for s in TRAINING_STAGES), 4)

    say(f"[bench {target.label}] I/O floor")
    floor = run_child(
        "bench.io_floor",
        ["--url", target.url, "--as-of", as_of.isoformat()],
        timeout_seconds=None,
    )
    floor_seconds = floor.get("total_seconds") if floor.get("status") == "ok" else None

    naive: dict[str, Any] | None = None
    if baseline:
        say(f"[bench {target.label}] naive baseline (limit {baseline_timeout_seconds:.0f} s)")
        naive = run_child(
            "bench.naive",
            ["--url", target.url, "--as-of", as_of.isoformat()],
            timeout_seconds=baseline_timeout_seconds,
        )
    baseline_seconds = (
        naive.get("total_seconds") if naive is not None and naive.get("status") == "ok" else None
    )

    total = job["seconds"]
    result: dict[str, Any] = {
        "tier": tier,
        "backend": backend,
        "customers": target.customers,
        "days": target.days,
        "seed": target.seed,
        "as_of": as_of.isoformat(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "warehouse": {
            "url": sa.make_url(target.url).render_as_string(hide_password=True),
            **{k: v for k, v in prepared.items() if k != "status"},
        },
        "total_seconds": total,
        "peak_rss_mb": job["process_peak_rss_mb"],
        "counts": {**job["counts"], **counts},
        "stages": log.stages,
        "score_day": job,
        "training": training,
        "training_total_seconds": training["total_seconds"] if training else None,
        "io_floor_seconds": floor_seconds,
        "io_floor": floor,
        "baseline_total_seconds": baseline_seconds,
        "baseline": naive,
        "ratios": {
            "baseline_over_job": _ratio(baseline_seconds, total),
            "job_over_io_floor": _ratio(total, floor_seconds),
        },
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{target.label}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    result["results_file"] = str(path)
    if echo:
        print(render_terminal(result), file=sys.stderr, flush=True)
    return result


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",.2f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def render_terminal(result: Mapping[str, Any]) -> str:
    """A short per-stage table and the headline figures of one result."""
    lines = [
        f"{result['tier']}-{result['backend']}: {result['customers']:,} customers, "
        f"load {result['machine'].get('load_average_at_start')}",
        f"{'stage':<18}{'seconds':>10}{'rows/s':>14}{'peak MB':>10}",
    ]
    for name, stage in result["stages"].items():
        lines.append(
            f"{name:<18}{_fmt(stage['seconds']):>10}"
            f"{_fmt(stage['rows_per_s'], ',.0f'):>14}{_fmt(stage['peak_rss_mb'], ',.0f'):>10}"
        )
    ratios = result["ratios"]
    lines += [
        f"nightly job (score_day): {_fmt(result['total_seconds'])} s, "
        f"peak {_fmt(result['peak_rss_mb'], ',.0f')} MB",
        f"I/O floor: {_fmt(result['io_floor_seconds'])} s "
        f"-> job = {_fmt(ratios['job_over_io_floor'])} x floor",
        f"naive baseline: {_fmt(result['baseline_total_seconds'])} s "
        f"-> {_faster_or_slower(ratios['baseline_over_job'])}",
        f"training ({TRAIN_SNAPSHOTS} snapshots): {_fmt(result['training_total_seconds'])} s",
    ]
    return "\n".join(lines)


def _faster_or_slower(baseline_over_job: float | None) -> str:
    """``job is 4.35 x faster`` or, below 1, ``job is 1.14 x slower``."""
    if baseline_over_job is None or baseline_over_job <= 0:
        return "no ratio"
    if baseline_over_job >= 1:
        return f"job is {_fmt(baseline_over_job)} x faster"
    return f"job is {_fmt(1 / baseline_over_job)} x slower"


def render_markdown(results: list[Mapping[str, Any]]) -> str:
    """The README's summary table (one row per result) and per-stage seconds."""
    head = (
        "| run | customers | job s | peak MB | I/O floor s | job / floor | naive s | "
        "naive / job | naive peak MB | training s | load avg |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    rows = []
    for r in results:
        naive = r.get("baseline") or {}
        reason = "" if naive.get("status") in (None, "ok") else f" ({naive.get('status')})"
        rows.append(
            f"| {r['tier']}-{r['backend']} | {r['customers']:,} | {_fmt(r['total_seconds'])} | "
            f"{_fmt(r['peak_rss_mb'], ',.0f')} | {_fmt(r['io_floor_seconds'])} | "
            f"{_fmt(r['ratios']['job_over_io_floor'])} | "
            f"{_fmt(r['baseline_total_seconds'])}{reason} | "
            f"{_fmt(r['ratios']['baseline_over_job'])} | "
            f"{_fmt(naive.get('peak_rss_mb'), ',.0f')} | "
            f"{_fmt(r.get('training_total_seconds'))} | "
            f"{r['machine'].get('load_average_at_start')} |"
        )
    names: list[str] = []
    for r in results:
        names += [n for n in r["stages"] if n not in names]
    stage_head = (
        "| stage | "
        + " | ".join(f"{r['tier']}-{r['backend']} s (rows/s, MB)" for r in results)
        + " |\n|---|"
        + "---:|" * len(results)
        + "\n"
    )
    stage_rows = []
    for name in names:
        cells = []
        for r in results:
            stage = r["stages"].get(name)
            cells.append(
                "-"
                if stage is None
                else f"{_fmt(stage['seconds'])} ({_fmt(stage['rows_per_s'], ',.0f')}, "
                f"{_fmt(stage['peak_rss_mb'], ',.0f')})"
            )
        stage_rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n\n" + stage_head + "\n".join(stage_rows) + "\n"


# --------------------------------------------------------------------------------------------
# Command line (child process entry points)
# --------------------------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="build (or reuse) a tier's warehouse")
    prepare.add_argument("--tier", choices=sorted(TIERS), required=True)
    prepare.add_argument("--backend", choices=BACKENDS, required=True)
    prepare.add_argument("--customers", type=int)
    prepare.add_argument("--data-dir", type=Path, default=DATA_DIR)
    prepare.add_argument("--artifacts-dir", type=Path, default=DATA_DIR / "artifacts")
    prepare.add_argument("--json-out", type=Path)
    table = commands.add_parser("table", help="markdown table of results files")
    table.add_argument("files", nargs="*", type=Path)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """``prepare`` a tier's warehouse, or print the ``table`` of results files."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = _parse_args(argv)
    if args.command == "prepare":
        target = bench_warehouse(
            args.tier, args.backend, customers=args.customers, data_dir=args.data_dir
        )
        args.artifacts_dir.mkdir(parents=True, exist_ok=True)
        done = prepare_warehouse(target, args.artifacts_dir)
        done["status"] = "ok"
        text = json.dumps(done, default=str)
        if args.json_out:
            args.json_out.write_text(text, encoding="utf-8")
        else:
            print(text)
        return
    files = args.files or sorted(RESULTS_DIR.glob("[SML]-*.json"))
    results = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]
    print(render_markdown(results), end="")


if __name__ == "__main__":
    main()
