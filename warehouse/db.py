"""Engines for the warehouse: driver choice, connection checks and transient-error detection."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from warehouse.settings import Settings, mask_secrets, mask_url

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
"""How long a SQLite connection waits for another writer's lock before failing."""

POSTGRES_CONNECT_TIMEOUT_SECONDS = 10
"""How long a PostgreSQL connection attempt may take before it counts as unreachable."""

_POSTGRES_SCHEMES = ("postgresql", "postgres")

# SQLSTATEs worth retrying: connection exceptions (class 08), serialization failure,
# deadlock, and the server shutting down or not yet accepting connections.
_TRANSIENT_SQLSTATES = ("40001", "40P01", "57P01", "57P02", "57P03")
_TRANSIENT_SQLSTATE_CLASSES = ("08",)
_TRANSIENT_MESSAGES = (
    "server closed the connection",
    "connection already closed",
    "connection is closed",
    "terminating connection",
    "connection was terminated",
    "connection reset",
    "connection refused",
    "could not connect",
    "could not receive data",
    "could not send data",
    "ssl syscall error",
    "broken pipe",
    "deadlock detected",
    "could not serialize access",
    "database is locked",
    "the database system is starting up",
    "the database system is shutting down",
)


class UnsupportedWarehouseError(ValueError):
    """The warehouse URL names a database whose SQLAlchemy dialect or driver is not installed."""


class WarehouseUnavailable(RuntimeError):  # noqa: N818
    """The warehouse cannot be reached; the message names the masked URL and the cause."""


def normalise_url(url: str | URL) -> URL:
    """The SQLAlchemy URL with ``postgresql://`` and ``postgres://`` mapped to psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in _POSTGRES_SCHEMES:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def engine_for(settings: Settings) -> sa.Engine:
    """A SQLAlchemy engine for the configured warehouse.

    PostgreSQL goes through psycopg 3 with a connect timeout; SQLite waits up to
    ``SQLITE_BUSY_TIMEOUT_SECONDS`` for locks. Connections are pinged before use.
    """
    return engine_for_url(settings.url)


def engine_for_url(url: str | URL) -> sa.Engine:
    """A SQLAlchemy engine for a warehouse URL, configured as :func:`engine_for` does."""
    parsed = normalise_url(url)
    backend = parsed.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_SECONDS
    elif backend == "postgresql" and parsed.get_driver_name() == "psycopg":
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_SECONDS
    try:
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise UnsupportedWarehouseError(
            f"no database driver for {parsed.drivername!r} warehouses is installed "
            f"({type(exc).__name__}: {first_error_line(exc, parsed.password)}); PostgreSQL "
            "(postgresql+psycopg://) and SQLite (sqlite:///) come with the job, another "
            "warehouse needs its SQLAlchemy dialect and driver installed"
        ) from exc


def adbc_uri(url: str | URL) -> str:
    """The URI an ADBC driver expects for a warehouse URL.

    PostgreSQL: a libpq URI (``postgresql://user:password@host:port/db``) without the
    SQLAlchemy driver suffix. SQLite: the database file path.
    """
    parsed = normalise_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        # SQLAlchemy leaves spaces unescaped, which libpq refuses (echoing the password).
        rendered = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        return rendered.replace(" ", "%20")
    if backend == "sqlite":
        database = parsed.database
        if not database or database == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared with an ADBC driver")
        return database
    raise ValueError(f"no ADBC driver for {backend!r} warehouses ({mask_url(str(url))})")


def _display_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def first_error_line(exc: BaseException, secret: str | None) -> str:
    """The driver's first line of ``exc`` (its ``orig`` when wrapped), passwords masked."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip().splitlines()
    line = text[0].strip() if text else type(cause).__name__
    if secret:
        line = line.replace(secret, "***")
    return mask_secrets(line)


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite warehouse URL; ``None`` for other backends and in-memory databases."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or parsed.query.get("uri"):
        return None
    return Path(database)


def check_connection(engine: sa.Engine, *, must_exist: bool = False) -> None:
    """Run ``SELECT 1``; raise :class:`WarehouseUnavailable` with a one-line reason if it fails.

    With ``must_exist``, a SQLite file that does not exist is refused instead of being
    created empty (SQLite creates a missing file on connect): for callers that only read the
    warehouse or need data already in it, where a mistyped path would leave a stray file.
    """
    path = sqlite_file(engine.url) if must_exist else None
    if path is not None and not path.exists():
        raise WarehouseUnavailable(
            f"cannot reach the warehouse at {_display_url(engine)}: the SQLite file {path} "
            "does not exist"
        )
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))
    except (sa.exc.DBAPIError, sqlite3.Error, OSError) as exc:
        reason = first_error_line(exc, engine.url.password)
        raise WarehouseUnavailable(
            f"cannot reach the warehouse at {_display_url(engine)}: {reason}"
        ) from exc


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo.extend([getattr(current, "orig", None), current.__cause__, current.__context__])
    return seen


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the failed operation may succeed.

    True for dropped or refused connections, serialization failures, deadlocks,
    administrator shutdowns and a locked SQLite database; False for errors in the
    statement or the data, which a retry would only repeat.
    """
    for current in _chain(exc):
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(sqlstate, str) and (
            sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
        ):
            return True
        if isinstance(current, sa.exc.StatementError) and current.orig is not None:
            continue
        message = str(current).lower()
        if any(fragment in message for fragment in _TRANSIENT_MESSAGES):
            return True
    return False
