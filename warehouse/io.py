"""Moving frames between the warehouse and Polars, on the fastest path each backend has.

Reads: ADBC for PostgreSQL and SQLite (Arrow straight from the driver), SQLAlchemy for
any other dialect. Every read is conformed to the caller's Polars schema: names, order
and dtypes, timestamps as ``Datetime("us", "UTC")``. Values that cannot be converted
raise ``ValueError`` naming the table, the column and how many rows failed.

Reads that belong together (the source tables of one run) can see one instant of a
PostgreSQL or SQLite warehouse: :func:`shared_snapshot` exports a PostgreSQL snapshot that
every :func:`read_frame` given it imports (even on connections of their own), or opens a
SQLite read transaction that they all go through, so rows committed while the reads run (a
load still going on) appear in none of them.

Writes: :func:`append_frame` inserts inside the caller's transaction (COPY on PostgreSQL,
``executemany`` on SQLite, batched inserts elsewhere); :func:`bulk_load` is the fastest
append for large loads (ADBC ingest) and commits on its own.

On SQLite the process holds two copies of the SQLite library: Python's (SQLAlchemy's
connections: run records, heartbeats, the list) and the ADBC driver's own (fast reads and
bulk loads). POSIX locks belong to the process, not to a connection: when one copy ends
its use of the file (a read finished, a connection closed) it drops the locks the other
copy holds on it, and another process could then write in the middle of a transaction of
ours, or under a read ("multiple copies of SQLite linked into the same application" in
SQLite's *How To Corrupt An SQLite Database File*). :func:`sqlite_library` therefore lets
only one copy use a database file at a time within this process: every ADBC connection to
a SQLite file is used inside it, and so is the heartbeat that runs beside the job's reads.

SQLite keeps timestamps as text. This module writes them the way SQLAlchemy does
(``YYYY-MM-DD HH:MM:SS.ffffff``, in UTC, without a zone) and reads any ISO 8601 text,
with or without an offset (text without one is taken as UTC).

Text that is not valid UTF-8 (a latin-1 string in a SQLite text column, bytes in a
PostgreSQL ``SQL_ASCII`` database) counts as a value that cannot be converted. PostgreSQL
``infinity`` and ``-infinity`` timestamps (and any beyond the year 294246, which Arrow
cannot hold) are read as null: an open end for an optional column such as ``ended_at``,
a missing value that validation quarantines for a required one.
"""

from __future__ import annotations

import io
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg

from warehouse.db import adbc_uri

SQLITE_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S%.6f"
"""How timestamps are stored in SQLite: SQLAlchemy's format, UTC wall time, no zone."""

_SQLITE_TIMESTAMP_STRFTIME = "%Y-%m-%d %H:%M:%S.%f"
SQLITE_ADBC_BATCH_ROWS = 1 << 30
# The SQLite ADBC driver infers each column's type from its first batch and fails on a
# later batch that disagrees (a column null in the first 1024 rows, say). One batch for
# the whole result lets it see every value before choosing.
_SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_BATCH_ROWS = 100_000
_GENERIC_BATCH_ROWS = 10_000
_EXAMPLES = 3

_POSTGRES_EARLIEST_US = -210_866_803_200_000_000
"""PostgreSQL's earliest timestamp (4714-11-24 BC) in microseconds since 1970; the ADBC
driver's reading of ``infinity``, ``-infinity`` and years after 294246 overflows to below it."""

_TRUE_TEXT = ("true", "t", "1", "yes", "y")
_FALSE_TEXT = ("false", "f", "0", "no", "n")

# Text timestamps: normalised to "YYYY-MM-DD HH:MM[:SS[.f]][+HH:MM]", then tried in order.
_TIMESTAMP_FORMATS_WITH_OFFSET = ("%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M%:z")
_TIMESTAMP_FORMATS_NAIVE = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------------------------
# Conforming frames to a schema
# --------------------------------------------------------------------------------------------


class UnreadableValuesError(ValueError):
    """Values of a source column that cannot be converted to the contract type; the message
    names the table, the column, how many rows and examples."""


def _failure_message(
    source: str, column: str, target: pl.DataType, original: pl.Series, failed: pl.Series
) -> str:
    n_failed = int(failed.sum())
    examples = original.filter(failed).unique(maintain_order=True).head(_EXAMPLES).to_list()
    shown = ", ".join(repr(str(v)[:40]) for v in examples)
    why = " because they are not valid UTF-8 text" if original.dtype == pl.Binary else ""
    return (
        f"{source}.{column}: {n_failed} of {original.len()} rows cannot be read as {target}"
        f"{why} (for example {shown})"
    )


def _parse_text_timestamps(text: pl.Series, time_zone: str) -> pl.Series:
    # Most rows are in the stored format; only the others go through the slower forms.
    parsed = text.str.to_datetime(
        SQLITE_TIMESTAMP_FORMAT, strict=False, time_unit="us", time_zone="UTC"
    )
    pending = text.is_not_null() & parsed.is_null()
    if pending.any():
        indices = pending.arg_true()
        parsed = parsed.scatter(indices, _parse_any_iso(text.gather(indices)))
    return parsed.dt.convert_time_zone(time_zone).alias(text.name)


def _parse_any_iso(text: pl.Series) -> pl.Series:
    normalised = (
        text.str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[Tt]", "${1} ")
        .str.replace(r"\s*[Zz]$", "+00:00")
        .str.replace(r"^(\S+ [\d:.]+)\s*([+-]\d{2})$", "${1}${2}:00")
        .str.replace(r"^(\S+ [\d:.]+)\s*([+-]\d{2})(\d{2})$", "${1}${2}:${3}")
    )
    candidates = [
        normalised.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        for fmt in _TIMESTAMP_FORMATS_WITH_OFFSET
    ]
    candidates += [
        normalised.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC")
        for fmt in _TIMESTAMP_FORMATS_NAIVE
    ]
    candidates.append(
        normalised.str.to_date("%Y-%m-%d", strict=False)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )
    return pl.select(pl.coalesce(candidates)).to_series()


def _to_datetime(values: pl.Series, target: pl.Datetime) -> pl.Series:
    time_zone = target.time_zone or "UTC"
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        aware = values if dtype.time_zone else values.dt.replace_time_zone("UTC")
        converted = aware.dt.convert_time_zone(time_zone).dt.cast_time_unit(target.time_unit)
    elif dtype == pl.Date:
        converted = values.cast(pl.Datetime(target.time_unit)).dt.replace_time_zone(time_zone)
    elif dtype == pl.String:
        converted = _parse_text_timestamps(values, time_zone).dt.cast_time_unit(target.time_unit)
    else:
        converted = pl.Series(values.name, [None] * values.len(), dtype=target)
    if target.time_zone is None:
        converted = converted.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return converted


def _to_boolean(values: pl.Series) -> pl.Series:
    dtype = values.dtype
    expr: pl.Expr
    if dtype.is_numeric():
        expr = pl.when(pl.col("v") == 1).then(True).when(pl.col("v") == 0).then(False)
    elif dtype == pl.String:
        text = pl.col("v").str.strip_chars().str.to_lowercase()
        expr = pl.when(text.is_in(_TRUE_TEXT)).then(True).when(text.is_in(_FALSE_TEXT)).then(False)
    else:
        expr = pl.lit(None, dtype=pl.Boolean)
    frame = pl.DataFrame({"v": values})
    return frame.select(expr.cast(pl.Boolean).alias(values.name)).to_series()


def _to_integer(values: pl.Series, target: pl.DataType) -> pl.Series:
    dtype = values.dtype
    if dtype.is_integer() or dtype == pl.Boolean:
        return values.cast(target, strict=False)
    if dtype == pl.String or isinstance(dtype, pl.Decimal):
        text = values.cast(pl.String).str.strip_chars()
        as_int = text.cast(target, strict=False)
        as_float = text.cast(pl.Float64, strict=False)
        whole = pl.select(
            pl.when(as_float == as_float.round()).then(as_float).otherwise(None)
        ).to_series()
        return as_int.fill_null(whole.cast(target, strict=False)).alias(values.name)
    if dtype.is_float():
        whole = pl.select(pl.when(values == values.round()).then(values)).to_series()
        return whole.cast(target, strict=False).alias(values.name)
    return pl.Series(values.name, [None] * values.len(), dtype=target)


def _to_float(values: pl.Series, target: pl.DataType) -> pl.Series:
    dtype = values.dtype
    if dtype == pl.String:
        return values.str.strip_chars().cast(target, strict=False)
    if dtype.is_numeric() or dtype == pl.Boolean:
        return values.cast(target, strict=False)
    return pl.Series(values.name, [None] * values.len(), dtype=target)


def _to_date(values: pl.Series) -> pl.Series:
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        aware = values if dtype.time_zone else values.dt.replace_time_zone("UTC")
        return aware.dt.convert_time_zone("UTC").dt.date()
    if dtype == pl.String:
        text = values.str.strip_chars()
        as_date = text.str.to_date("%Y-%m-%d", strict=False)
        return as_date.fill_null(_parse_text_timestamps(text, "UTC").dt.date())
    return pl.Series(values.name, [None] * values.len(), dtype=pl.Date)


def _utf8_or_none(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _to_string(values: pl.Series) -> pl.Series:
    dtype = values.dtype
    if dtype == pl.Binary:
        try:
            return values.cast(pl.String, strict=False)
        except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError):
            # Some value is not UTF-8: decode one by one, so the failures are counted.
            decoded = [_utf8_or_none(v) for v in values.to_list()]
            return pl.Series(values.name, decoded, dtype=pl.String)
    if isinstance(dtype, pl.Struct | pl.List | pl.Array):
        return pl.Series(
            values.name,
            [None if v is None else json.dumps(v, default=str) for v in values.to_list()],
            dtype=pl.String,
        )
    if dtype == pl.Object:
        return pl.Series(
            values.name,
            [None if v is None else _json_text(v) for v in values.to_list()],
            dtype=pl.String,
        )
    return values.cast(pl.String, strict=False)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _convert(values: pl.Series, target: pl.DataType) -> pl.Series:
    if values.dtype == target:
        return values
    if values.dtype == pl.Null:
        return values.cast(target)
    if isinstance(target, pl.Datetime):
        return _to_datetime(values, target)
    if target == pl.Boolean:
        return _to_boolean(values)
    if target.is_integer():
        return _to_integer(values, target)
    if target.is_float():
        return _to_float(values, target)
    if target == pl.Date:
        return _to_date(values)
    if target == pl.String:
        return _to_string(values)
    return values.cast(target, strict=False)


def conform(frame: pl.DataFrame, schema: pl.Schema, *, source: str) -> pl.DataFrame:
    """``frame`` with exactly ``schema``: its columns, in its order, with its dtypes.

    Text timestamps are parsed (no offset means UTC), integers 0/1 become booleans,
    whole floats become integers. Raises ``ValueError`` naming ``source`` and the column when
    a column is missing, and :class:`UnreadableValuesError` with the number of rows and
    examples when values cannot be converted.
    """
    missing = [name for name in schema.names() if name not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: the result has no column(s) {', '.join(missing)} "
            f"(it has {', '.join(frame.columns) or 'no columns'})"
        )
    columns: list[pl.Series] = []
    for name, target in schema.items():
        original = frame.get_column(name)
        converted = _convert(original, target).alias(name)
        failed = original.is_not_null() & converted.is_null()
        if failed.any():
            raise UnreadableValuesError(_failure_message(source, name, target, original, failed))
        columns.append(converted)
    if not columns:
        return pl.DataFrame(schema=schema)
    return pl.DataFrame(columns)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


Query = sa.Select[Any] | sa.CompoundSelect[Any]
"""A SELECT, or a UNION ALL of SELECTs of the same columns."""


def _query_source(query: Query) -> str:
    first = query.selects[0] if isinstance(query, sa.CompoundSelect) else query
    froms = first.get_final_froms() if isinstance(first, sa.Select) else []
    names = [
        from_.fullname if isinstance(from_, sa.Table) else str(getattr(from_, "name", "query"))
        for from_ in froms
    ]
    return "+".join(names) or "query"


def _positional_value(value: Any, backend: str) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"query parameter {value!r} has no time zone; pass aware datetimes")
        if backend == "sqlite":
            return value.astimezone(UTC).strftime(_SQLITE_TIMESTAMP_STRFTIME)
        return value
    if backend == "sqlite":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, date):
            return value.isoformat()
    return value


def _compile_positional(query: Query, backend: str) -> tuple[str, list[Any]]:
    dialect: sa.Dialect
    if backend == "postgresql":
        dialect = pg_psycopg.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]
    else:
        dialect = sqlite_dialect.dialect(paramstyle="qmark")
    compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    order = compiled.positiontup or []
    return compiled.string, [_positional_value(params[name], backend) for name in order]


SqliteLibrary = Literal["python", "adbc"]
"""The two copies of the SQLite library in this process: Python's and the ADBC driver's."""


class _SqliteFileUse:
    """Which copy of the SQLite library uses one database file in this process, and how often."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.library: SqliteLibrary | None = None
        self.users = 0
        self.waiting: dict[SqliteLibrary, int] = {"python": 0, "adbc": 0}


_SQLITE_FILES: dict[str, _SqliteFileUse] = {}
_SQLITE_FILES_GUARD = threading.Lock()
_SQLITE_HELD = threading.local()
"""Per thread: database file -> (library, depth) of the uses the thread is inside."""


@contextmanager
def sqlite_library(engine: sa.Engine, library: SqliteLibrary) -> Iterator[None]:
    """Use the engine's SQLite file through one copy of the SQLite library (see module docs).

    Uses through the same copy run side by side; a use through the other copy waits until
    they end, and while it waits no new use of the first copy starts, so neither starves.
    A thread already inside a use may enter again through the same copy; through the
    other one it raises ``RuntimeError`` (it would wait for itself). Does nothing for
    other databases.
    """
    if not (engine.dialect.name == "sqlite" and uses_adbc(engine)):
        yield
        return
    key = os.path.realpath(adbc_uri(engine.url))
    held: dict[str, tuple[SqliteLibrary, int]] = _SQLITE_HELD.__dict__.setdefault("files", {})
    mine, depth = held.get(key, (library, 0))
    if depth and mine != library:
        raise RuntimeError(
            f"{key}: used through the {library} copy of SQLite while this thread uses it "
            f"through the {mine} copy"
        )
    with _SQLITE_FILES_GUARD:
        use = _SQLITE_FILES.setdefault(key, _SqliteFileUse())
    other: SqliteLibrary = "adbc" if library == "python" else "python"
    with use.changed:
        use.waiting[library] += 1
        try:
            while depth == 0 and (
                use.library == other or (use.library == library and use.waiting[other] > 0)
            ):
                use.changed.wait()
        finally:
            use.waiting[library] -= 1
        use.library = library
        use.users += 1
    held[key] = (library, depth + 1)
    try:
        yield
    finally:
        if depth:
            held[key] = (library, depth)
        else:
            del held[key]
        with use.changed:
            use.users -= 1
            if use.users == 0:
                use.library = None
            use.changed.notify_all()


@contextmanager
def adbc_connection(engine: sa.Engine) -> Iterator[Any]:
    """An ADBC DB-API connection to the engine's PostgreSQL or SQLite database.

    On SQLite the connection lives inside :func:`sqlite_library` (``"adbc"``), from
    opening to closing.
    """
    backend = engine.dialect.name
    uri = adbc_uri(engine.url)
    conn: Any
    with sqlite_library(engine, "adbc"):
        if backend == "postgresql":
            import adbc_driver_postgresql.dbapi as adbc_postgresql

            conn = adbc_postgresql.connect(uri)
            setup = "SET TIME ZONE 'UTC'"  # naive timestamp columns then compare as UTC
        else:
            import adbc_driver_sqlite.dbapi as adbc_sqlite

            conn = adbc_sqlite.connect(uri)
            setup = f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}"
        try:
            with conn.cursor() as cursor:
                cursor.execute(setup)
            conn.commit()
            yield conn
        finally:
            conn.close()


def _plain_arrow(table: pa.Table) -> pa.Table:
    """Extension columns (json, uuid, opaque) replaced by their storage arrays."""
    for index, field in enumerate(table.schema):
        if isinstance(field.type, pa.BaseExtensionType):
            column = table.column(index)
            storage = pa.chunked_array(
                [chunk.storage for chunk in column.chunks], type=field.type.storage_type
            )
            table = table.set_column(index, field.name, storage)
    return table


def _valid_text(table: pa.Table) -> pa.Table:
    """Text columns holding bytes that are not UTF-8 turned into binary columns.

    Drivers pass such bytes through as Arrow strings, which Polars would carry along
    until something crashes far away; as binary they fail to convert, rows counted.
    """
    for index, field in enumerate(table.schema):
        if not (pa.types.is_string(field.type) or pa.types.is_large_string(field.type)):
            continue
        column = table.column(index)
        try:
            column.validate(full=True)
        except pa.ArrowInvalid:
            binary = pa.large_binary() if pa.types.is_large_string(field.type) else pa.binary()
            chunks = [chunk.view(binary) for chunk in column.chunks]
            table = table.set_column(index, field.name, pa.chunked_array(chunks, type=binary))
    return table


def _without_infinite_timestamps(frame: pl.DataFrame) -> pl.DataFrame:
    """PostgreSQL timestamps that overflowed on the way to Arrow (``infinity``) as null."""
    overflowed = [
        pl.when(pl.col(name).dt.epoch("us") < _POSTGRES_EARLIEST_US)
        .then(None)
        .otherwise(pl.col(name))
        .alias(name)
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime)
    ]
    return frame.with_columns(overflowed) if overflowed else frame


def uses_adbc(engine: sa.Engine) -> bool:
    """Whether reads from this engine take the ADBC fast path (PostgreSQL, SQLite files)."""
    backend = engine.dialect.name
    if backend == "postgresql":
        return True
    if backend == "sqlite":
        database = engine.url.database
        return bool(database) and database != ":memory:"
    return False


_SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")
"""What ``pg_export_snapshot()`` returns, e.g. ``00000003-0000001B-1``."""


class SqliteReadTransaction:
    """An open read transaction on a SQLite file: the reads given it see one instant.

    It holds one ADBC connection, so reads through it run one at a time.
    """

    def __init__(self, connection: Any, database: str) -> None:
        self.connection = connection
        self.database = database
        self.turn = threading.Lock()


Snapshot = str | SqliteReadTransaction
"""A PostgreSQL snapshot identifier or an open SQLite read transaction."""


@contextmanager
def shared_snapshot(engine: sa.Engine) -> Iterator[Snapshot | None]:
    """One instant of the warehouse for :func:`read_frame` to read as of; None elsewhere.

    PostgreSQL: the identifier of an exported snapshot. The exporting transaction
    (``REPEATABLE READ``, reading nothing) stays open until the block ends, so every read
    started inside the block can import the snapshot; its
    ``idle_in_transaction_session_timeout`` is lifted for that time, so a long read cannot
    end it before the last read has started.

    SQLite file: a read transaction, begun at once, that every read given it goes
    through. A writer can go on meanwhile in WAL mode (the reads do not see its commits);
    in the default rollback-journal mode its commit waits until the block ends.

    Other dialects (and in-memory SQLite): None; each read is its own transaction.
    """
    if engine.dialect.name == "sqlite" and uses_adbc(engine):
        with adbc_connection(engine) as conn:
            with conn.cursor() as cursor:
                # Any read of the file begins the transaction (and takes its instant) now.
                cursor.execute("SELECT count(*) FROM sqlite_master")
                cursor.fetch_arrow_table()
            yield SqliteReadTransaction(conn, adbc_uri(engine.url))
        return
    if engine.dialect.name != "postgresql":
        yield None
        return
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        conn.exec_driver_sql("SET LOCAL idle_in_transaction_session_timeout = 0")
        yield str(conn.execute(sa.select(sa.func.pg_export_snapshot())).scalar_one())


def _fetch_adbc(conn: Any, sql: str, params: list[Any], backend: str) -> pa.Table:
    with conn.cursor() as cursor:
        if backend == "sqlite":
            cursor.adbc_statement.set_options(
                **{"adbc.sqlite.query.batch_rows": str(SQLITE_ADBC_BATCH_ROWS)}
            )
        cursor.execute(sql, params or None)
        return cursor.fetch_arrow_table()


def _read_adbc(engine: sa.Engine, query: Query, snapshot: Snapshot | None) -> pl.DataFrame:
    backend = engine.dialect.name
    sql, params = _compile_positional(query, backend)
    if isinstance(snapshot, SqliteReadTransaction):
        with snapshot.turn:
            table = _fetch_adbc(snapshot.connection, sql, params, backend)
    else:
        with adbc_connection(engine) as conn:
            if snapshot is not None:
                # The identifier cannot be a bound parameter; read_frame matched it to _SNAPSHOT_ID.
                with conn.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
            table = _fetch_adbc(conn, sql, params, backend)
            conn.rollback()
    frame = pl.from_arrow(_valid_text(_plain_arrow(table)))
    assert isinstance(frame, pl.DataFrame)
    if backend == "postgresql":
        frame = _without_infinite_timestamps(frame)
    return frame


def _read_generic(engine: sa.Engine, query: Query, names: Sequence[str]) -> pl.DataFrame:
    selected = query
    if engine.dialect.name == "sqlite":
        if isinstance(query, sa.CompoundSelect):
            query = sa.select(*query.subquery().c)
        # SQLAlchemy's SQLite DateTime reader ignores offsets; read the raw text instead.
        selected = query.with_only_columns(
            *[
                sa.type_coerce(column, sa.String()).label(column.key)
                if isinstance(column.type, sa.DateTime | sa.Date)
                else column
                for column in query.selected_columns
            ],
            maintain_column_froms=True,
        )
    frames: list[pl.DataFrame] = []
    with engine.connect() as conn:
        result = conn.execute(selected)
        keys = list(result.keys())
        for rows in result.partitions(_GENERIC_BATCH_ROWS):
            frames.append(
                pl.DataFrame(
                    [tuple(row) for row in rows],
                    schema=keys,
                    orient="row",
                    infer_schema_length=None,
                )
            )
    if not frames:
        return pl.DataFrame({name: [] for name in keys or names})
    return pl.concat(frames, how="diagonal_relaxed")


def _check_snapshot(engine: sa.Engine, snapshot: Snapshot | None) -> None:
    backend = engine.dialect.name
    if isinstance(snapshot, SqliteReadTransaction):
        if not (backend == "sqlite" and uses_adbc(engine)):
            raise ValueError(f"a SQLite read transaction cannot be used on {backend}")
        if os.path.realpath(snapshot.database) != os.path.realpath(adbc_uri(engine.url)):
            raise ValueError(f"the read transaction is on {snapshot.database}, not this database")
        return
    if snapshot is not None and backend != "postgresql":
        raise ValueError(f"PostgreSQL snapshot identifiers cannot be used on {backend}")
    if snapshot is not None and not _SNAPSHOT_ID.fullmatch(snapshot):
        raise ValueError(f"{snapshot!r} is not a PostgreSQL snapshot identifier")


def read_frame(
    engine: sa.Engine,
    query: Query,
    schema: pl.Schema,
    *,
    snapshot: Snapshot | None = None,
) -> pl.DataFrame:
    """Run a Core SELECT (parameters bound, never inlined) and return exactly ``schema``.

    ADBC for PostgreSQL and file-backed SQLite, SQLAlchemy otherwise. ``snapshot`` (from
    :func:`shared_snapshot` of the same database) makes the read see the database as of
    that instant. An empty result still has the schema. Raises ``ValueError`` naming the
    table, the column and how many rows failed when values cannot be converted to the
    schema's dtypes.
    """
    source = _query_source(query)
    _check_snapshot(engine, snapshot)
    if uses_adbc(engine):
        raw = _read_adbc(engine, query, snapshot)
    else:
        raw = _read_generic(engine, query, schema.names())
    if raw.height == 0:
        missing = [name for name in schema.names() if name not in raw.columns]
        if missing:
            raise ValueError(f"{source}: the result has no column(s) {', '.join(missing)}")
        return pl.DataFrame(schema=schema)
    return conform(raw, schema, source=source)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def column_dtype(column: sa.Column[Any]) -> pl.DataType:
    """The Polars dtype whose values a column of this SQL type accepts exactly."""
    sql_type = column.type
    if isinstance(sql_type, sa.JSON):
        return pl.String()
    if isinstance(sql_type, sa.DateTime):
        return pl.Datetime("us", "UTC") if sql_type.timezone else pl.Datetime("us")
    if isinstance(sql_type, sa.Date):
        return pl.Date()
    if isinstance(sql_type, sa.Boolean):
        return pl.Boolean()
    if isinstance(sql_type, sa.BigInteger):
        return pl.Int64()
    if isinstance(sql_type, sa.SmallInteger):
        return pl.Int16()
    if isinstance(sql_type, sa.Integer):
        return pl.Int32()
    if isinstance(sql_type, sa.Float):
        precision = sql_type.precision
        return pl.Float32() if precision is not None and precision <= 24 else pl.Float64()
    if isinstance(sql_type, sa.Numeric):
        return pl.Float64()
    if isinstance(sql_type, sa.String):
        return pl.String()
    raise TypeError(f"{column.table}.{column.name}: no Polars dtype for {sql_type!r}")


def _json_columns(table: sa.Table) -> list[str]:
    return [c.name for c in table.columns if isinstance(c.type, sa.JSON)]


def _check_json(frame: pl.DataFrame, table: sa.Table) -> None:
    for name in _json_columns(table):
        if name not in frame.columns:
            continue
        bad = 0
        for text in frame.get_column(name).drop_nulls().to_list():
            try:
                json.loads(text)
            except (TypeError, ValueError):
                bad += 1
        if bad:
            raise ValueError(f"{table.fullname}.{name}: {bad} of {frame.height} rows are not JSON")


def for_table(frame: pl.DataFrame, table: sa.Table) -> pl.DataFrame:
    """``frame`` cast to the exact types of ``table``'s columns that it carries.

    Columns the table does not have raise ``ValueError``; columns the frame lacks are
    left to their defaults (or NULL). JSON columns accept dicts, lists or JSON text.
    """
    unknown = [name for name in frame.columns if name not in table.columns]
    if unknown:
        raise ValueError(
            f"{table.fullname} has no column(s) {', '.join(unknown)} "
            f"(it has {', '.join(c.name for c in table.columns)})"
        )
    schema = pl.Schema({c.name: column_dtype(c) for c in table.columns if c.name in frame.columns})
    conformed = conform(frame, schema, source=table.fullname)
    _check_json(conformed, table)
    return conformed


def _sqlite_storage(frame: pl.DataFrame) -> pl.DataFrame:
    """Values as SQLite keeps them: timestamps as UTC text, dates as text, booleans as 0/1."""
    expressions: list[pl.Expr] = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            utc = column.dt.convert_time_zone("UTC") if dtype.time_zone else column
            expressions.append(utc.dt.strftime(SQLITE_TIMESTAMP_FORMAT))
        elif dtype == pl.Date:
            expressions.append(column.dt.strftime("%Y-%m-%d"))
        elif dtype == pl.Boolean:
            expressions.append(column.cast(pl.Int64))
        else:
            expressions.append(column)
    return frame.select(expressions)


def _copy_postgres(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    preparer = conn.dialect.identifier_preparer
    columns = ", ".join(preparer.quote(name) for name in frame.columns)
    statement = (
        f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN "
        "WITH (FORMAT csv, HEADER false)"
    )
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    with driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for chunk in frame.iter_slices(_WRITE_BATCH_ROWS):
            buffer = io.BytesIO()
            chunk.write_csv(
                buffer,
                include_header=False,
                quote_style="non_numeric",
                datetime_format="%Y-%m-%d %H:%M:%S%.6f%:z",
                date_format="%Y-%m-%d",
            )
            copy.write(buffer.getvalue())


def _executemany_sqlite(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    preparer = conn.dialect.identifier_preparer
    columns = ", ".join(preparer.quote(name) for name in frame.columns)
    placeholders = ", ".join("?" for _ in frame.columns)
    statement = f"INSERT INTO {preparer.format_table(table)} ({columns}) VALUES ({placeholders})"
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None
    stored = _sqlite_storage(frame)
    for chunk in stored.iter_slices(_WRITE_BATCH_ROWS):
        driver_connection.executemany(statement, chunk.iter_rows())


def _insert_generic(conn: sa.Connection, table: sa.Table, frame: pl.DataFrame) -> None:
    json_columns = [name for name in _json_columns(table) if name in frame.columns]
    for chunk in frame.iter_slices(_GENERIC_BATCH_ROWS):
        rows = chunk.to_dicts()
        for row in rows:
            for name in json_columns:
                if row[name] is not None:
                    row[name] = json.loads(row[name])
        conn.execute(table.insert(), rows)


def append_frame(conn: sa.Connection, table: sa.Table, df: pl.DataFrame) -> int:
    """Insert ``df`` into ``table`` inside the caller's transaction; return rows written.

    PostgreSQL: COPY through the connection's psycopg driver connection. SQLite:
    ``executemany`` on the same DB-API connection. Other dialects: batched Core inserts.
    Values are cast to the table's column types first (see :func:`for_table`), so
    a rollback of the caller's transaction leaves nothing behind.
    """
    if df.height == 0:
        return 0
    frame = for_table(df, table)
    backend = conn.dialect.name
    if backend == "postgresql" and conn.dialect.driver == "psycopg":
        _copy_postgres(conn, table, frame)
    elif backend == "sqlite" and conn.dialect.driver == "pysqlite":
        _executemany_sqlite(conn, table, frame)
    else:
        _insert_generic(conn, table, frame)
    return frame.height


def _arrow_for_ingest(frame: pl.DataFrame, backend: str) -> pa.Table:
    if backend == "sqlite":
        frame = _sqlite_storage(frame)
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    fields = [
        pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def bulk_load(engine: sa.Engine, table: sa.Table, df: pl.DataFrame) -> int:
    """Append ``df`` to an existing ``table`` as fast as the backend allows; commits.

    ADBC ingest for PostgreSQL and file-backed SQLite (values cast to the table's exact
    types first), otherwise :func:`append_frame` in one transaction. Returns rows written.
    """
    if df.height == 0:
        return 0
    if not uses_adbc(engine) or _json_columns(table):
        with engine.begin() as conn:
            return append_frame(conn, table, df)
    frame = for_table(df, table)
    arrow = _arrow_for_ingest(frame, engine.dialect.name)
    with adbc_connection(engine) as conn, conn.cursor() as cursor:
        cursor.adbc_ingest(table.name, arrow, mode="append", db_schema_name=table.schema)
        conn.commit()
    return frame.height
