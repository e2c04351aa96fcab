"""Writing and reading the job's outputs: ``retention_list`` and ``scoring_runs``.

* A run is recorded in ``scoring_runs`` when it starts (:func:`start_run`, status
  ``running``), keeps a heartbeat (:func:`heartbeat`, :func:`heartbeating`) and ends as
  ``succeeded`` (:func:`finish_run`), ``failed`` with its error (:func:`fail_run`) or,
  when its process died, ``abandoned`` (:func:`mark_abandoned_runs`).
* :func:`replace_retention_list` replaces one day's rows in a single transaction: the
  previous list for that day stays until the new one is committed, and a failure
  anywhere rolls everything back. Given a :class:`RunSummary`, the run's ``succeeded``
  record is committed in the same transaction, so a list and its run never disagree.
* :func:`as_of_lock` makes a whole run exclusive per ``as_of`` across processes
  (PostgreSQL advisory lock on a dedicated connection; SQLite lock file next to the
  database file). A second run for the same day gets :class:`RunInProgress`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psutil
import sqlalchemy as sa

from warehouse.db import first_error_line
from warehouse.io import append_frame, read_frame, sqlite_library
from warehouse.schema import Warehouse, contract_schema, polars_schema
from warehouse.settings import mask_secrets

log = logging.getLogger(__name__)

RUN_STATUSES = ("running", "succeeded", "failed", "abandoned")
"""Values of ``scoring_runs.status``."""

RUN_KINDS = ("nightly", "backfill", "train")
"""The usual values of ``scoring_runs.kind`` (any string of up to 16 characters is accepted)."""

REASON_SOURCES = ("exact", "none")
"""Values of ``retention_list.reason_source`` written by this package."""

PRIORITIES = ("high", "medium", "low")
"""Values of ``retention_list.priority``."""

ERROR_MAX_CHARS = 20_000
"""Longest error text kept in ``scoring_runs.error`` (longer text is cut, marked ``...``)."""

WRITE_LOCK_TIMEOUT_SECONDS = 120
"""How long a list write waits for another write of the same day (PostgreSQL)."""

_COUNT_FIELDS = ("n_scored", "n_listed", "n_quarantined", "n_cooled_down")
_PRIORITISED_COLUMNS = (
    "customer_id",
    "rank",
    "listed",
    "churn_probability",
    "value_at_risk",
    "customer_value",
    "priority",
    "segment",
    "cooled_down",
)


class DayLockLost(RuntimeError):  # noqa: N818 (the name the CLI and flows catch)
    """The run's lock on its day ended before the write (its database session died)."""


class RunInProgress(RuntimeError):  # noqa: N818 (the name the CLI and flows catch)
    """Another run for the same ``as_of`` holds the lock."""

    def __init__(self, as_of: date, holder: str | None = None) -> None:
        self.as_of = as_of
        self.holder = holder
        detail = holder or "held by another session"
        super().__init__(f"another run for {as_of.isoformat()} is in progress ({detail})")


class ListRowsError(ValueError):
    """Rows handed to :func:`replace_retention_list` do not fit ``retention_list``."""


class ListWriteError(RuntimeError):
    """Writing a day's list failed and was rolled back; the previous list is unchanged.

    The database error is the ``__cause__``.
    """


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def utc_now() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


def warehouse_now(conn: sa.Connection) -> datetime:
    """The warehouse's clock (UTC-aware) on PostgreSQL, this host's elsewhere.

    Run starts, heartbeats and the abandoned-run check use it, so hosts whose clocks
    disagree never take each other's live runs for stale ones. (A SQLite file is used from
    one host.)
    """
    if conn.dialect.name == "postgresql":
        value = conn.execute(sa.select(sa.func.now())).scalar_one()
        aware = _aware(value)
        if aware is not None:
            return aware
    return utc_now()


def _aware(value: datetime | None) -> datetime | None:
    """SQLite returns timestamps without a zone; they are stored in UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _json_value(value: Any) -> Any:
    """``value`` made JSON-safe: dates and other objects become strings, NaN becomes null."""
    if value is None:
        return None
    return _finite(json.loads(json.dumps(value, default=str)))


def scrub_error(text: str, engine: sa.Engine | None = None) -> str:
    """Error text safe to store: passwords masked, length bounded."""
    cleaned = mask_secrets(text)
    password = engine.url.password if engine is not None else None
    if password:
        cleaned = cleaned.replace(str(password), "***")
    if len(cleaned) > ERROR_MAX_CHARS:
        cleaned = cleaned[: ERROR_MAX_CHARS - 3] + "..."
    return cleaned


def new_run_id() -> str:
    """A fresh run id (32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class RunCounts:
    """The counts recorded with a run (None: not known, e.g. the run failed before)."""

    n_scored: int | None = None
    n_listed: int | None = None
    n_quarantined: int | None = None
    n_cooled_down: int | None = None

    @classmethod
    def of(cls, counts: RunCounts | Mapping[str, int | None] | None) -> RunCounts:
        """Counts from a mapping with keys ``n_scored``, ``n_listed``, ... (or ``scored``, ...)."""
        if counts is None:
            return cls()
        if isinstance(counts, RunCounts):
            return counts
        values: dict[str, int | None] = {}
        for key, value in counts.items():
            name = key if key.startswith("n_") else f"n_{key}"
            if name not in _COUNT_FIELDS:
                raise ValueError(
                    f"unknown run count {key!r}; expected one of {', '.join(_COUNT_FIELDS)}"
                )
            values[name] = None if value is None else int(value)
        return cls(**values)

    def as_columns(self) -> dict[str, int | None]:
        """The ``scoring_runs`` count columns."""
        return {name: getattr(self, name) for name in _COUNT_FIELDS}


@dataclass(frozen=True)
class RunSummary:
    """What a succeeded run records in ``scoring_runs``."""

    model_version: str | None
    counts: RunCounts | Mapping[str, int | None] = field(default_factory=RunCounts)
    timings: Mapping[str, float] = field(default_factory=dict)
    data_quality: Mapping[str, Any] | None = None
    drift: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# Run records
# --------------------------------------------------------------------------------------------


def pid_scope() -> str | None:
    """Where this process's pid means this process: kernel boot and PID namespace (Linux).

    Two containers can share a host name while each has its own PID namespace, and a
    rebooted machine reuses pids: a pid identifies a process only together with the boot
    (``/proc/sys/kernel/random/boot_id``) and the PID namespace (``/proc/self/ns/pid``),
    e.g. ``d02d57bf-47c4-4994-9de4-06baeadc6c3f/pid:[4026531836]``. None where these are
    not available (other operating systems).
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return None
    return f"{boot}/{namespace}"[:128]


def start_run(
    engine: sa.Engine,
    wh: Warehouse,
    *,
    kind: str,
    as_of: date | None,
    run_id: str | None = None,
) -> str:
    """Record a run as ``running`` (with host, pid, start and heartbeat); return its id.

    Started inside :func:`as_of_lock` for the same day, the run is named as the lock's
    holder, so a refused second run is told which run holds the day.
    """
    if not kind or len(kind) > 16:
        raise ValueError(f"run kind must be 1 to 16 characters, got {kind!r}")
    run_id = run_id or new_run_id()
    if len(run_id) > 64:
        raise ValueError(f"run id must be at most 64 characters, got {len(run_id)}")
    runs = wh["scoring_runs"]
    with engine.begin() as conn:
        now = warehouse_now(conn)
        conn.execute(
            sa.insert(runs).values(
                run_id=run_id,
                kind=kind,
                as_of=as_of,
                status="running",
                started_at=now,
                heartbeat_at=now,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
                pid_scope=pid_scope(),
            )
        )
    if as_of is not None:
        _name_lock_holder(engine, wh, as_of, run_id)
    return run_id


def heartbeat(engine: sa.Engine, wh: Warehouse, run_id: str) -> bool:
    """Refresh a running run's ``heartbeat_at``; False when the run is no longer running.

    It runs beside the job's reads, so on SQLite it waits for them to let go of the file
    (:func:`~warehouse.io.sqlite_library`).
    """
    runs = wh["scoring_runs"]
    with sqlite_library(engine, "python"), engine.begin() as conn:
        result = conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == run_id, runs.c.status == "running")
            .values(heartbeat_at=warehouse_now(conn))
        )
    return result.rowcount > 0


@contextmanager
def heartbeating(
    engine: sa.Engine, wh: Warehouse, run_id: str, every: timedelta = timedelta(seconds=60)
) -> Iterator[None]:
    """Refresh the run's heartbeat from a background thread while the block runs.

    A failed heartbeat is logged and retried at the next interval; it never stops
    the run. Pick ``stale_after`` in :func:`mark_abandoned_runs` as several intervals.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every.total_seconds()):
            try:
                heartbeat(engine, wh, run_id)
            except Exception as exc:
                log.warning("heartbeat for run %s failed: %s", run_id, scrub_error(str(exc)))

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _finish_values(summary: RunSummary, status: str) -> dict[str, Any]:
    if status not in RUN_STATUSES or status == "running":
        raise ValueError(f"a finished run's status must be succeeded or failed, got {status!r}")
    return {
        "status": status,
        "finished_at": utc_now(),
        "model_version": summary.model_version,
        **RunCounts.of(summary.counts).as_columns(),
        "timings": _json_value(dict(summary.timings)),
        "data_quality": _json_value(summary.data_quality),
        "drift": _json_value(summary.drift),
        "error": None,
    }


def _record_finish(
    conn: sa.Connection, wh: Warehouse, run_id: str, summary: RunSummary, status: str
) -> None:
    runs = wh["scoring_runs"]
    result = conn.execute(
        sa.update(runs).where(runs.c.run_id == run_id).values(**_finish_values(summary, status))
    )
    if result.rowcount != 1:
        raise LookupError(f"{runs.fullname}: no run {run_id!r} to finish (start_run first)")


def finish_run(
    engine: sa.Engine,
    wh: Warehouse,
    run_id: str,
    *,
    status: str = "succeeded",
    model_version: str | None,
    counts: RunCounts | Mapping[str, int | None] | None = None,
    timings: Mapping[str, float] | None = None,
    data_quality: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
) -> None:
    """Record the end of a run: status, finish time, model version, counts, timings, reports."""
    summary = RunSummary(
        model_version=model_version,
        counts=RunCounts.of(counts),
        timings=dict(timings or {}),
        data_quality=data_quality,
        drift=drift,
    )
    with engine.begin() as conn:
        _record_finish(conn, wh, run_id, summary, status)


def fail_run(
    engine: sa.Engine,
    wh: Warehouse,
    run_id: str,
    *,
    error: str | BaseException,
    timings: Mapping[str, float] | None = None,
    model_version: str | None = None,
    counts: RunCounts | Mapping[str, int | None] | None = None,
    data_quality: Mapping[str, Any] | None = None,
    drift: Mapping[str, Any] | None = None,
) -> None:
    """Record a run as ``failed`` with its error (passwords masked) and what is known so far.

    Only the fields given are written; counts and reports already recorded are kept.
    A run already recorded as ``succeeded`` keeps that status (its list is committed);
    the failure is logged instead. Raises ``LookupError`` when the run does not exist.
    """
    if isinstance(error, BaseException):
        # An interruption (KeyboardInterrupt, a termination signal) has no message of its own.
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    else:
        text = error
    values: dict[str, Any] = {
        "status": "failed",
        "finished_at": utc_now(),
        "error": scrub_error(text, engine),
    }
    if timings is not None:
        values["timings"] = _json_value(dict(timings))
    if model_version is not None:
        values["model_version"] = model_version
    if counts is not None:
        values.update({k: v for k, v in RunCounts.of(counts).as_columns().items() if v is not None})
    if data_quality is not None:
        values["data_quality"] = _json_value(data_quality)
    if drift is not None:
        values["drift"] = _json_value(drift)
    runs = wh["scoring_runs"]
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == run_id, runs.c.status != "succeeded")
            .values(**values)
        )
        if result.rowcount == 1:
            return
        exists = conn.execute(sa.select(runs.c.status).where(runs.c.run_id == run_id)).first()
    if exists is None:
        raise LookupError(f"{runs.fullname}: no run {run_id!r} to mark failed")
    log.warning(
        "run %s already succeeded; not marking it failed after: %s", run_id, values["error"]
    )


def _process_gone(pid: int, started_at: datetime | None) -> bool:
    """Whether the process that started a run on this host no longer runs."""
    if pid == os.getpid():
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return True
        # A pid reused by a process started after the run cannot be the run's process.
        return started_at is not None and process.create_time() > started_at.timestamp() + 1.0
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def mark_abandoned_runs(engine: sa.Engine, wh: Warehouse, *, stale_after: timedelta) -> int:
    """Mark ``running`` runs as ``abandoned`` when their process is gone; return how many.

    A run is abandoned when its last heartbeat (or start) is older than
    ``stale_after``, or when it was started by a process of this host, boot and PID
    namespace (:func:`pid_scope`) that no longer exists. A run from another PID
    namespace (another container with the same host name) is judged by its heartbeat
    only: its pid means nothing here. The reason is written to ``error``.
    """
    runs = wh["scoring_runs"]
    here, scope = socket.gethostname()[:255], pid_scope()
    with engine.connect() as conn:
        now = warehouse_now(conn)
        candidates = conn.execute(
            sa.select(
                runs.c.run_id,
                runs.c.started_at,
                runs.c.heartbeat_at,
                runs.c.host,
                runs.c.pid,
                runs.c.pid_scope,
            ).where(runs.c.status == "running")
        ).all()
    verdicts: dict[str, str] = {}
    for run_id, started_at, heartbeat_at, host, pid, run_scope in candidates:
        started, last = _aware(started_at), _aware(heartbeat_at) or _aware(started_at)
        if last is not None and now - last > stale_after:
            verdicts[run_id] = (
                f"abandoned: no heartbeat since {last.isoformat(timespec='seconds')} "
                f"(stale after {stale_after})"
            )
        elif (
            host == here
            and run_scope == scope
            and pid is not None
            and _process_gone(int(pid), started)
        ):
            verdicts[run_id] = f"abandoned: process {pid} on {host} is gone"
    marked = 0
    with engine.begin() as conn:
        for run_id, reason in verdicts.items():
            result = conn.execute(
                sa.update(runs)
                .where(runs.c.run_id == run_id, runs.c.status == "running")
                .values(status="abandoned", finished_at=now, error=reason)
            )
            marked += result.rowcount
    return marked


def latest_runs(engine: sa.Engine, wh: Warehouse, limit: int = 20) -> pl.DataFrame:
    """The newest runs first, with every ``scoring_runs`` column (JSON columns as text)."""
    runs = wh["scoring_runs"]
    schema = polars_schema(runs)
    json_columns = {c.name for c in runs.columns if isinstance(c.type, sa.JSON)}
    time_columns = {c.name for c in runs.columns if isinstance(c.type, sa.DateTime)}
    query = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    records: list[dict[str, Any]] = []
    for row in rows:
        record: dict[str, Any] = {}
        for name in schema.names():
            value = row[name]
            if name in json_columns and value is not None:
                value = value if isinstance(value, str) else json.dumps(value, default=str)
            elif name in time_columns:
                value = _aware(value)
            record[name] = value
        records.append(record)
    return pl.DataFrame(records, schema=schema, orient="row")


# --------------------------------------------------------------------------------------------
# The retention list
# --------------------------------------------------------------------------------------------


def build_list_rows(
    prioritised: pl.DataFrame,
    reasons: pl.DataFrame,
    *,
    as_of: date,
    model_version: str,
    run_id: str,
) -> pl.DataFrame:
    """The ``retention_list`` rows for one day, in rank order.

    ``prioritised`` has one row per scored customer (rank, listed, probability, value
    at risk, customer value, priority, segment, cooled_down); ``reasons`` has
    ``customer_id``, ``reason_source``, reason codes and sentences and, optionally,
    ``action_code`` and ``recommended_action``, for the customers that have them.
    Everyone else gets ``reason_source = "none"`` and null reasons and actions.
    """
    schema = contract_schema("retention_list")
    if "customer_id" not in reasons.columns:
        raise ListRowsError("reasons frame has no customer_id column")
    unknown = reasons.join(prioritised.select("customer_id"), on="customer_id", how="anti")
    if unknown.height:
        raise ListRowsError(
            f"reasons given for {unknown.height} customer(s) who were not scored "
            f"(e.g. {unknown['customer_id'][0]})"
        )
    overlap = [c for c in reasons.columns if c != "customer_id" and c in prioritised.columns]
    if overlap:
        raise ListRowsError(f"reasons frame repeats prioritised column(s) {', '.join(overlap)}")
    missing = [c for c in _PRIORITISED_COLUMNS if c not in prioritised.columns]
    if missing:
        raise ListRowsError(f"prioritised frame lacks column(s) {', '.join(missing)}")
    # Only the list's own columns: anything else the reasons carry (their feature values,
    # say) would be spread over every scored row for nothing.
    wanted = ["customer_id", *(c for c in reasons.columns if c in schema and c != "customer_id")]
    joined = prioritised.join(
        reasons.select(wanted), on="customer_id", how="left", maintain_order="left"
    )
    columns: list[pl.Expr] = []
    for name, dtype in schema.items():
        if name == "as_of":
            columns.append(pl.lit(as_of, dtype=pl.Date).alias(name))
        elif name == "model_version":
            columns.append(pl.lit(model_version, dtype=pl.String).alias(name))
        elif name == "run_id":
            columns.append(pl.lit(run_id, dtype=pl.String).alias(name))
        elif name == "reason_source":
            source = pl.col(name) if name in joined.columns else pl.lit(None, dtype=pl.String)
            columns.append(source.fill_null("none").alias(name))
        elif name in joined.columns:
            columns.append(pl.col(name).cast(dtype))
        else:
            columns.append(pl.lit(None, dtype=dtype).alias(name))
    return joined.select(columns).sort("rank")


def validate_list_rows(
    rows: pl.DataFrame, table: sa.Table, *, as_of: date, run_id: str
) -> pl.DataFrame:
    """``rows`` in ``table``'s column order and dtypes, or :class:`ListRowsError` saying why.

    Checks: exactly the table's columns; values convertible to its types; every row
    for ``as_of`` and ``run_id``; no nulls in NOT NULL columns; text within column
    widths; one row per customer; ranks a permutation of ``1..n``.
    """
    where = table.fullname
    expected = [c.name for c in table.columns]
    missing = [c for c in expected if c not in rows.columns]
    extra = [c for c in rows.columns if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(extra)}")
        raise ListRowsError(f"{where} rows: {'; '.join(parts)}")
    schema = polars_schema(table)
    converted: list[pl.Series] = []
    for name, dtype in schema.items():
        column = rows.get_column(name)
        try:
            converted.append(column.cast(dtype, strict=True))
        except (pl.exceptions.InvalidOperationError, pl.exceptions.ComputeError) as exc:
            raise ListRowsError(
                f"{where}.{name}: values of type {column.dtype} cannot be stored as {dtype}"
            ) from exc
    frame = pl.DataFrame(converted)
    n = frame.height

    wrong_day = int((frame["as_of"] != as_of).sum())
    if wrong_day:
        raise ListRowsError(f"{where}.as_of: {wrong_day} of {n} rows are not for {as_of}")
    wrong_run = int((frame["run_id"] != run_id).sum())
    if wrong_run:
        raise ListRowsError(f"{where}.run_id: {wrong_run} of {n} rows are not run {run_id}")
    for sql_column in table.columns:
        name = sql_column.name
        if not sql_column.nullable:
            nulls = frame[name].null_count()
            if nulls:
                raise ListRowsError(f"{where}.{name}: null in {nulls} of {n} rows")
        length = getattr(sql_column.type, "length", None)
        if isinstance(length, int) and isinstance(sql_column.type, sa.String):
            too_long = int((frame[name].str.len_chars() > length).sum())
            if too_long:
                raise ListRowsError(
                    f"{where}.{name}: {too_long} of {n} rows are longer than {length} characters"
                )
    repeats = n - frame["customer_id"].n_unique()
    if repeats:
        raise ListRowsError(f"{where}.customer_id: {repeats} of {n} rows repeat a customer")
    ranks = frame["rank"].sort()
    if n and not ranks.equals(pl.Series("rank", range(1, n + 1), dtype=ranks.dtype)):
        raise ListRowsError(f"{where}.rank: the {n} ranks are not a permutation of 1..{n}")
    bad_priority = int((~frame["priority"].is_in(PRIORITIES)).sum())
    if bad_priority:
        raise ListRowsError(
            f"{where}.priority: {bad_priority} of {n} rows are not one of {', '.join(PRIORITIES)}"
        )
    return frame


def _advisory_key(purpose: str, table: sa.Table, as_of: date) -> int:
    """A signed 64-bit advisory lock key for one table and day."""
    text = f"retention-risk|{purpose}|{table.schema or ''}|{table.name}|{as_of.isoformat()}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def replace_retention_list(
    engine: sa.Engine,
    wh: Warehouse,
    as_of: date,
    rows: pl.DataFrame,
    run_id: str,
    *,
    summary: RunSummary | None = None,
) -> int:
    """Replace the list for ``as_of`` with ``rows`` atomically; return rows written.

    One transaction: take the day's write lock, delete the day's rows, append the new
    ones and, with ``summary``, mark the run ``succeeded`` (its timings gain
    ``write``). Anything failing rolls all of it back: the previous list stays.
    """
    table = wh["retention_list"]
    frame = validate_list_rows(rows, table, as_of=as_of, run_id=run_id)
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{WRITE_LOCK_TIMEOUT_SECONDS}s'")
                key = _advisory_key("write", table, as_of)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                _check_lock_still_held(engine, wh, as_of)
            # On SQLite the DELETE is the transaction's first statement: it takes the write lock.
            conn.execute(sa.delete(table).where(table.c.as_of == as_of))
            written = append_frame(conn, table, frame)
            if summary is not None:
                timings = {**summary.timings, "write": round(time.perf_counter() - started, 4)}
                finished = RunSummary(
                    model_version=summary.model_version,
                    counts=summary.counts,
                    timings=timings,
                    data_quality=summary.data_quality,
                    drift=summary.drift,
                )
                _record_finish(conn, wh, run_id, finished, "succeeded")
    except (LookupError, ValueError, DayLockLost):
        raise
    except Exception as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ListWriteError(
            f"writing {frame.height} rows of {table.fullname} for {as_of} failed and was rolled "
            f"back; the previous list is unchanged: {type(exc).__name__}: "
            f"{scrub_error(cause[0] if cause else '', engine)}"
        ) from exc
    return written


def read_retention_list(
    engine: sa.Engine,
    wh: Warehouse,
    *,
    as_of: date | None = None,
    top: int | None = None,
    segment: str | None = None,
    listed_only: bool = True,
) -> pl.DataFrame:
    """One day's list in rank order (None: the latest day written).

    ``listed_only`` keeps the listed customers; ``segment`` keeps one segment;
    ``top`` keeps the first rows after those filters. Empty when no list exists.
    """
    table = wh["retention_list"]
    schema = polars_schema(table)
    if as_of is None:
        with engine.connect() as conn:
            latest = conn.execute(sa.select(sa.func.max(table.c.as_of))).scalar_one_or_none()
        if latest is None:
            return pl.DataFrame(schema=schema)
        as_of = latest if isinstance(latest, date) else date.fromisoformat(str(latest))
    query = sa.select(table).where(table.c.as_of == as_of)
    if listed_only:
        query = query.where(table.c.listed.is_(True))
    if segment is not None:
        query = query.where(table.c.segment == segment)
    query = query.order_by(table.c.rank)
    if top is not None:
        query = query.limit(top)
    return read_frame(engine, query, schema)


# --------------------------------------------------------------------------------------------
# The per-as_of run lock
# --------------------------------------------------------------------------------------------

_local_locks: dict[str, dict[str, Any]] = {}
_local_locks_guard = threading.Lock()

# Locks this process holds, by (database, table, as_of): how to name the run holding each.
_held_locks: dict[tuple[str, str, date], Callable[[str], None]] = {}
_lock_checks: dict[tuple[str, str, date], Callable[[], None]] = {}
"""Per held day lock: a check that raises :class:`DayLockLost` once the lock has ended."""
_held_locks_guard = threading.Lock()


def _held_key(engine: sa.Engine, wh: Warehouse, as_of: date) -> tuple[str, str, date]:
    return (
        engine.url.render_as_string(hide_password=True),
        wh["retention_list"].fullname,
        as_of,
    )


@contextmanager
def _registered(
    engine: sa.Engine,
    wh: Warehouse,
    as_of: date,
    name_holder: Callable[[str], None],
    still_held: Callable[[], None] | None = None,
) -> Iterator[None]:
    key = _held_key(engine, wh, as_of)
    with _held_locks_guard:
        _held_locks[key] = name_holder
        if still_held is not None:
            _lock_checks[key] = still_held
    try:
        yield
    finally:
        with _held_locks_guard:
            _held_locks.pop(key, None)
            _lock_checks.pop(key, None)


def _check_lock_still_held(engine: sa.Engine, wh: Warehouse, as_of: date) -> None:
    """Raise :class:`DayLockLost` when this process's lock on ``as_of`` has ended."""
    with _held_locks_guard:
        still_held = _lock_checks.get(_held_key(engine, wh, as_of))
    if still_held is not None:
        still_held()


def _name_lock_holder(engine: sa.Engine, wh: Warehouse, as_of: date, run_id: str) -> None:
    """Record ``run_id`` as the holder of this process's lock for ``as_of``, if it holds one."""
    with _held_locks_guard:
        name_holder = _held_locks.get(_held_key(engine, wh, as_of))
    if name_holder is None:
        return
    try:
        name_holder(run_id)
    except Exception as exc:
        log.warning("could not name run %s as the lock holder: %s", run_id, scrub_error(str(exc)))


def _holder_info(run_id: str | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "since": utc_now().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def _describe(info: Mapping[str, Any]) -> str:
    parts = []
    if info.get("run_id"):
        parts.append(f"run {info['run_id']}")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    if info.get("host") or info.get("pid"):
        parts.append(f"on {info.get('host') or '?'} pid {info.get('pid') or '?'}")
    return " ".join(parts) if parts else "held by another session"


def _run_details(
    engine: sa.Engine, wh: Warehouse, as_of: date, run_id: str | None
) -> dict[str, Any] | None:
    """The running run that holds the lock, from scoring_runs (best effort)."""
    runs = wh["scoring_runs"]
    query = sa.select(runs.c.run_id, runs.c.started_at, runs.c.host, runs.c.pid)
    if run_id:
        query = query.where(runs.c.run_id == run_id)
    else:
        query = query.where(runs.c.as_of == as_of, runs.c.status == "running").order_by(
            runs.c.started_at.desc()
        )
    try:
        with engine.connect() as conn:
            row = conn.execute(query.limit(1)).first()
    except sa.exc.SQLAlchemyError:
        return None
    if row is None:
        return None
    started = _aware(row.started_at)
    return {
        "run_id": row.run_id,
        "since": started.isoformat(timespec="seconds") if started else None,
        "host": row.host,
        "pid": row.pid,
    }


_APPLICATION_PREFIX = "retention-risk run "

LOCK_KEEPALIVE = {
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}
"""TCP keepalives of the PostgreSQL session holding a day's lock (seconds, probes).

The server notices a client whose host vanished from the network only through keepalives;
with the server's defaults (often 2 hours and more) the day stays locked, and every rerun is
refused, for that long. With these the lock is released about a minute after the host goes.
"""


@contextmanager
def _postgres_lock(
    engine: sa.Engine, wh: Warehouse, as_of: date, run_id: str | None
) -> Iterator[None]:
    key = _advisory_key("run", wh["retention_list"], as_of)
    conn = engine.connect()

    def name_holder(holder_run_id: str) -> None:
        application_name = f"{_APPLICATION_PREFIX}{holder_run_id}"[:63]
        conn.execute(sa.select(sa.func.set_config("application_name", application_name, False)))
        conn.commit()

    try:
        conn.execute(
            sa.select(
                *(sa.func.set_config(name, value, False) for name, value in LOCK_KEEPALIVE.items())
            )
        )
        acquired = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar_one())
        conn.commit()
        if acquired and run_id:
            name_holder(run_id)
    except BaseException:
        conn.close()
        raise
    if not acquired:
        conn.close()
        raise RunInProgress(as_of, _postgres_holder(engine, wh, as_of, key))
    holds = sa.text(
        f"SELECT count(*) FROM pg_locks WHERE {_ADVISORY_LOCK_ROW} AND pid = pg_backend_pid()"
    )

    def still_held() -> None:
        reason = "the lock is no longer held"
        try:
            held = bool(conn.execute(holds, _advisory_lock_params(key)).scalar_one())
            conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            held = False
            reason = scrub_error(first_error_line(exc, engine.url.password), engine)
        if not held:
            raise DayLockLost(
                f"the run's lock on {as_of} ended before the write (its database session "
                f"went away: {reason}); the list was not written, so a run that took the day "
                "meanwhile is not overwritten. Rerun the day."
            )

    try:
        with _registered(engine, wh, as_of, name_holder, still_held):
            yield
    finally:
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            conn.execute(sa.select(sa.func.set_config("application_name", "", False)))
            conn.commit()
        except sa.exc.SQLAlchemyError:
            # Ending the session releases its advisory locks.
            conn.invalidate()
        finally:
            conn.close()


_ADVISORY_LOCK_ROW = (
    "locktype = 'advisory' AND granted AND objsubid = 1 "
    "AND classid = CAST(:classid AS oid) AND objid = CAST(:objid AS oid)"
)
"""The ``pg_locks`` row of a granted advisory lock on a bigint key (see the params below)."""


def _advisory_lock_params(key: int) -> dict[str, int]:
    """``pg_locks`` shows a bigint advisory key as two 32-bit halves (classid, objid)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return {"classid": unsigned >> 32, "objid": unsigned & 0xFFFFFFFF}


def _postgres_holder(engine: sa.Engine, wh: Warehouse, as_of: date, key: int) -> str | None:
    query = sa.text(
        "SELECT a.pid, a.application_name, a.backend_start, host(a.client_addr) AS client "
        "FROM pg_stat_activity a WHERE a.pid IN (SELECT pid FROM pg_locks WHERE "
        f"{_ADVISORY_LOCK_ROW}) LIMIT 1"
    )
    holder: dict[str, Any] = {}
    run_id: str | None = None
    # The holder names its session right after it records its run: give it a moment.
    deadline = time.monotonic() + _HOLDER_DETAILS_WAIT_SECONDS
    while True:
        try:
            with engine.connect() as conn:
                found = conn.execute(query, _advisory_lock_params(key)).first()
        except sa.exc.SQLAlchemyError:
            found = None
        name = "" if found is None else (found.application_name or "")
        if name.startswith(_APPLICATION_PREFIX):
            run_id = name[len(_APPLICATION_PREFIX) :]
        if found is None or run_id is not None or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if found is not None:
        backend_start = _aware(found.backend_start)
        holder = {
            "run_id": run_id,
            "since": backend_start.isoformat(timespec="seconds") if backend_start else None,
            "host": found.client or "local socket",
            "pid": f"{found.pid} (server)",
        }
    details = _run_details(engine, wh, as_of, run_id)
    if details:
        return _describe(details)
    return _describe(holder) if holder else None


def _sqlite_database_file(engine: sa.Engine) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        if "mode=memory" in database:
            return None
        database = database[len("file:") :].split("?", 1)[0]
    return Path(database).resolve()


_HOLDER_DETAILS_WAIT_SECONDS = 2.0
"""How long a refused run waits for the holder's details to appear in the lock file."""


def _lock_file_path(database: Path, wh: Warehouse, as_of: date) -> Path:
    table = wh["retention_list"]
    label = f"{table.schema}.{table.name}" if table.schema else table.name
    return database.with_name(f"{database.name}.{label}.{as_of.isoformat()}.lock")


@contextmanager
def _file_lock(
    path: Path, engine: sa.Engine, wh: Warehouse, as_of: date, run_id: str | None
) -> Iterator[None]:
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # The holder writes its details just after it takes the lock: give it a moment.
            holder = _read_lock_file(fd)
            deadline = time.monotonic() + _HOLDER_DETAILS_WAIT_SECONDS
            while not holder and time.monotonic() < deadline:
                time.sleep(0.02)
                holder = _read_lock_file(fd)
            os.close(fd)
            details = _run_details(engine, wh, as_of, holder.get("run_id"))
            described = details or holder
            raise RunInProgress(as_of, _describe(described) if described else None) from None
        # The previous holder may have removed the file between our open and flock.
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)

    def name_holder(holder_run_id: str | None) -> None:
        details = json.dumps(_holder_info(holder_run_id)).encode()
        os.pwrite(fd, details, 0)  # then cut what is left of longer details
        os.ftruncate(fd, len(details))

    try:
        name_holder(run_id)
        with _registered(engine, wh, as_of, name_holder):
            yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _read_lock_file(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode() or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


@contextmanager
def _local_lock(
    engine: sa.Engine, wh: Warehouse, as_of: date, run_id: str | None
) -> Iterator[None]:
    table = wh["retention_list"]
    key = f"{engine.url.render_as_string(hide_password=True)}|{table.fullname}|{as_of}"
    with _local_locks_guard:
        holder = _local_locks.get(key)
        if holder is not None:
            raise RunInProgress(as_of, _describe(holder))
        _local_locks[key] = _holder_info(run_id)

    def name_holder(holder_run_id: str) -> None:
        with _local_locks_guard:
            _local_locks[key] = _holder_info(holder_run_id)

    try:
        with _registered(engine, wh, as_of, name_holder):
            yield
    finally:
        with _local_locks_guard:
            _local_locks.pop(key, None)


@contextmanager
def as_of_lock(
    engine: sa.Engine, wh: Warehouse, as_of: date, *, run_id: str | None = None
) -> Iterator[None]:
    """Hold the exclusive lock for runs of ``as_of`` while the block runs.

    PostgreSQL: a session advisory lock (key from the retention_list table and the
    day) on a dedicated connection; it is released when the block ends or the
    session dies. SQLite: an exclusive ``flock`` on a lock file next to the database
    file, released when the block ends or the process dies. In-memory SQLite and
    other dialects: a lock within this process only. Raises :class:`RunInProgress`
    naming the holder (its run id, start, host and pid when known) when the day is
    already locked. ``run_id`` identifies this holder in that message.
    """
    backend = engine.dialect.name
    if backend == "postgresql":
        with _postgres_lock(engine, wh, as_of, run_id):
            yield
        return
    database = _sqlite_database_file(engine) if backend == "sqlite" else None
    if database is not None:
        with _file_lock(_lock_file_path(database, wh, as_of), engine, wh, as_of, run_id):
            yield
        return
    with _local_lock(engine, wh, as_of, run_id):
        yield
