"""Reading the five source tables for a time window, with the window pushed into SQL.

Only contract columns are selected, and each table is restricted to the window by
bound parameters:

- customers: ``signup_at < window_end``
- subscriptions: ``started_at < window_end`` and (``ended_at`` null or ``>= window_start``)
- interactions, activity, retention_contacts: event time in ``[window_start, window_end)``
- interactions, in addition: complaints opened before ``window_end`` and not resolved before
  ``window_start`` (still open when the window starts, however old), so that features can
  count every complaint open at a snapshot

Rows whose event time is null are read too, so validation can count them instead
of losing them. ``window_end=None`` reads everything from ``window_start`` on,
including rows dated in the future. Every frame comes back with exactly
:func:`~warehouse.schema.polars_schema` of its table, timestamps in UTC.

SQLite keeps timestamps as text that may carry offsets, so text comparisons there
are only approximately right: SQLite gets the window widened by two days and the exact
window is applied after reading. The same goes for a PostgreSQL timestamp column that
is declared as text (compared byte-wise, ``COLLATE "C"``). A text value that does not
start like an ISO 8601 date (``YYYY-MM-DD``), or a number or blob on SQLite, cannot be
placed in the window by SQL, so such rows are always read: the conversion then stops
the run naming the table, the column and how many rows are unreadable, instead of
leaving them out unseen. That check cannot use an index, so on SQLite (and on text
columns) the windowed tables are scanned in full.

The five reads show the warehouse at one instant (:func:`~warehouse.io.shared_snapshot`):
on PostgreSQL they import one exported snapshot, though they run on connections of their
own; on a SQLite file they run one after another in one read transaction. On other
dialects each table is read in its own transaction.

Before reading, :func:`~warehouse.contract.check_contract` confirms that every source
table and column exists and that timestamp columns have a comparable type; a mismatch
raises :class:`~warehouse.contract.ContractError` listing every problem.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from warehouse.contract import ReflectedTypes, check_contract
from warehouse.io import (
    Query,
    Snapshot,
    conform,
    read_frame,
    shared_snapshot,
    uses_adbc,
)
from warehouse.schema import (
    SOURCE_TABLES,
    Warehouse,
    contract_schema,
    contract_table,
    polars_schema,
)

EVENT_TIME = {
    "customers": "signup_at",
    "subscriptions": "started_at",
    "interactions": "opened_at",
    "activity": "occurred_at",
    "retention_contacts": "contacted_at",
}
"""The column that places each source row in time."""

_SQLITE_WINDOW_MARGIN = timedelta(days=2)
_ISO_DATE_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*"
_ISO_DATE_REGEX = "^[0-9]{4}-[0-9]{2}-[0-9]{2}"


@dataclass
class SourceData:
    """The five source tables as Polars frames, each with its contract schema."""

    customers: pl.DataFrame
    subscriptions: pl.DataFrame
    interactions: pl.DataFrame
    activity: pl.DataFrame
    retention_contacts: pl.DataFrame

    def frames(self) -> dict[str, pl.DataFrame]:
        """The frames keyed by their logical (contract) table name."""
        return {name: getattr(self, name) for name in SOURCE_TABLES}

    def lazy(self) -> dict[str, pl.LazyFrame]:
        """The frames as LazyFrames, keyed by logical table name."""
        return {name: frame.lazy() for name, frame in self.frames().items()}

    def row_counts(self) -> dict[str, int]:
        """Rows per logical table name."""
        return {name: frame.height for name, frame in self.frames().items()}

    @classmethod
    def from_frames(cls, frames: Mapping[str, pl.DataFrame]) -> SourceData:
        """Source data from frames keyed by logical name, conformed to the contract schemas.

        Tables not given are empty and columns a frame lacks are null, which keeps
        literal frames in tests short; values that do not fit a column raise ``ValueError``.
        """
        unknown = sorted(set(frames) - set(SOURCE_TABLES))
        if unknown:
            raise ValueError(
                f"unknown source table(s) {', '.join(unknown)}; "
                f"expected some of {', '.join(SOURCE_TABLES)}"
            )
        conformed: dict[str, Any] = {}
        for name in SOURCE_TABLES:
            schema = contract_schema(name)
            frame = frames.get(name)
            if frame is None:
                conformed[name] = pl.DataFrame(schema=schema)
                continue
            absent = [pl.lit(None).alias(c) for c in schema.names() if c not in frame.columns]
            conformed[name] = conform(frame.with_columns(absent), schema, source=name)
        return cls(**conformed)


def _require_aware(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} {value.isoformat()} has no time zone; pass an aware datetime")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class _TimeColumn:
    """How one timestamp column is compared in SQL: natively, or as text (SQLite, text)."""

    column: sa.Column[Any]
    dialect: str
    as_text: bool

    def _text(self) -> sa.ColumnElement[Any]:
        if self.dialect == "postgresql":
            return sa.collate(sa.type_coerce(self.column, sa.String()), "C")
        return sa.type_coerce(self.column, sa.String())

    def _bound(self, value: datetime, shift: timedelta) -> sa.BindParameter[Any]:
        """A bound parameter for comparing the column with ``value``.

        As text the bound is a date string widened by ``shift``: text timestamps with
        or without offsets all compare correctly against it.
        """
        if self.as_text:
            return sa.literal((value + shift).date().isoformat(), sa.String())
        return sa.literal(value, self.column.type)

    def at_or_after(self, value: datetime) -> sa.ColumnElement[bool]:
        condition: sa.ColumnElement[bool]
        if self.as_text:
            condition = self._text() >= self._bound(value, -_SQLITE_WINDOW_MARGIN)
        else:
            condition = self.column >= self._bound(value, timedelta(0))
        return condition

    def before(self, value: datetime) -> sa.ColumnElement[bool]:
        condition: sa.ColumnElement[bool]
        if self.as_text:
            condition = self._text() < self._bound(value, _SQLITE_WINDOW_MARGIN)
        else:
            condition = self.column < self._bound(value, timedelta(0))
        return condition

    def unplaceable(self) -> sa.ColumnElement[bool] | None:
        """Rows SQL cannot place in time: not null and not starting like an ISO date."""
        text = sa.type_coerce(self.column, sa.String())
        if self.dialect == "sqlite":
            glob = text.op("GLOB", return_type=sa.Boolean)(sa.literal(_ISO_DATE_GLOB, sa.String()))
            return sa.not_(glob)
        if self.as_text and self.dialect == "postgresql":
            return sa.not_(text.regexp_match(_ISO_DATE_REGEX))
        return None

    def keep(self, condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
        """``condition``, or null, or (as text) a value SQL cannot place."""
        unplaceable = self.unplaceable()
        alternatives = [self.column.is_(None), condition]
        if unplaceable is not None:
            alternatives.insert(1, unplaceable)
        return sa.or_(*alternatives)

    def keep_apart(self, condition: sa.ColumnElement[bool]) -> list[sa.ColumnElement[bool]]:
        """:meth:`keep` as conditions whose rows together are the same, for one SELECT each.

        ``t IS NULL OR t BETWEEN ...`` hides the range from PostgreSQL's planner, which then
        scans the whole table; on their own both use an index on ``t`` (at L the activity
        read touches 82k pages instead of 271k). Text comparisons cannot use one anyway.
        """
        if self.as_text:
            return [self.keep(condition)]
        return [condition, self.column.is_(None)]


def _window_filter(
    logical: str,
    table: sa.Table,
    start: datetime,
    end: datetime | None,
    dialect: str,
    text_columns: Collection[str],
) -> tuple[list[list[sa.ColumnElement[bool]]], pl.Expr]:
    """SQL conditions (coarse on text) and the exact Polars filter for one table.

    The conditions come as branches: each is the WHERE of one SELECT, and the table's rows
    are those of all of them (no row is in two).
    """

    def time_column(name: str) -> _TimeColumn:
        as_text = dialect == "sqlite" or name in text_columns
        return _TimeColumn(table.c[name], dialect, as_text)

    event = time_column(EVENT_TIME[logical])
    event_col = pl.col(event.column.name)
    conditions: list[sa.ColumnElement[bool]] = []
    exact = pl.lit(True)
    if logical == "customers":
        if end is not None:
            conditions.append(event.keep(event.before(end)))
            exact = event_col.is_null() | (event_col < end)
        return [conditions], exact
    if logical == "subscriptions":
        ended = time_column("ended_at")
        conditions.append(ended.keep(ended.at_or_after(start)))
        exact = pl.col("ended_at").is_null() | (pl.col("ended_at") >= start)
        if end is not None:
            conditions.append(event.keep(event.before(end)))
            exact = exact & (event_col.is_null() | (event_col < end))
        return [conditions], exact
    in_window = event.at_or_after(start)
    exact_in_window = event_col >= start
    if end is not None:
        in_window = sa.and_(in_window, event.before(end))
        exact_in_window = exact_in_window & (event_col < end)
    if logical == "interactions":
        # Complaints opened before the window and still unresolved at its start are read
        # too: "open at the snapshot" counts every open complaint, however old.
        old_open, exact_old_open = _still_open_complaints(table, time_column, start, end)
        # One scan: the old open complaints cannot be found by an index on opened_at anyway.
        conditions.append(sa.or_(event.keep(in_window), old_open))
        return [conditions], event_col.is_null() | exact_in_window | exact_old_open
    branches = [[branch] for branch in event.keep_apart(in_window)]
    return branches, event_col.is_null() | exact_in_window


COMPLAINT_KIND = "complaint"
"""The interaction kind that counts as a complaint (after trimming and lower-casing)."""


def _still_open_complaints(
    table: sa.Table,
    time_column: Callable[[str], _TimeColumn],
    start: datetime,
    end: datetime | None,
) -> tuple[sa.ColumnElement[bool], pl.Expr]:
    """Complaints opened before ``end`` and not resolved before ``start``: SQL and exact.

    The SQL condition is a superset (any kind containing "complaint", coarse on text
    timestamps); the Polars filter applies the exact rule after reading.
    """
    kind = sa.func.lower(sa.type_coerce(table.c.kind, sa.String()))
    is_complaint = kind.contains(COMPLAINT_KIND, autoescape=True)
    resolved = time_column("resolved_at")
    # The time conditions come first: PostgreSQL evaluates them in the order written, and the
    # lower-cased kind costs a string per row, so it is computed only for rows they keep
    # (at L this takes the server's share of the interactions read from 1.7 s to 1.1 s).
    conditions = [resolved.keep(resolved.at_or_after(start))]
    opened = pl.col("opened_at")
    exact = (pl.col("kind").str.strip_chars().str.to_lowercase() == COMPLAINT_KIND) & (
        pl.col("resolved_at").is_null() | (pl.col("resolved_at") >= start)
    )
    if end is not None:
        event = time_column("opened_at")
        conditions.append(event.keep(event.before(end)))
        exact = exact & (opened.is_null() | (opened < end))
    return sa.and_(*conditions, is_complaint), exact


def text_time_columns(reflected: ReflectedTypes) -> dict[str, frozenset[str]]:
    """Per source table, the contract timestamp columns the database declares as text."""
    return {
        logical: frozenset(
            name
            for name, sql_type in columns.items()
            if isinstance(sql_type, sa.String)
            and isinstance(contract_table(logical).c[name].type, sa.DateTime)
        )
        for logical, columns in reflected.items()
    }


def _window(
    window_start: datetime, window_end: datetime | None
) -> tuple[datetime, datetime | None]:
    start = _require_aware(window_start, "window_start")
    end = None if window_end is None else _require_aware(window_end, "window_end")
    if end is not None and end <= start:
        raise ValueError(
            f"window_end {end.isoformat()} must be later than window_start {start.isoformat()}"
        )
    return start, end


def source_query(
    wh: Warehouse,
    logical: str,
    *,
    window_start: datetime,
    window_end: datetime | None,
    dialect: str,
    text_columns: Collection[str] = (),
) -> tuple[Query, pl.Expr]:
    """The SELECT for one source table (contract columns, window) and its exact row filter.

    For activity and retention contacts it is a UNION ALL: the rows in the window, and
    those without a time (see :meth:`_TimeColumn.keep_apart`).

    ``text_columns`` names timestamp columns the database declares as text (see
    :func:`text_time_columns`); on SQLite every timestamp is compared as text.
    """
    start, end = _window(window_start, window_end)
    table = wh[logical]
    branches, exact = _window_filter(logical, table, start, end, dialect, text_columns)
    selects = [sa.select(*table.c).where(*conditions) for conditions in branches]
    return (selects[0] if len(selects) == 1 else sa.union_all(*selects)), exact


READ_WORKERS = 2
"""Source tables read at the same time on the fast (ADBC) paths."""

_LARGEST_FIRST = ("activity", "interactions")
SOURCE_READ_ORDER = (
    *_LARGEST_FIRST,
    *(name for name in SOURCE_TABLES if name not in _LARGEST_FIRST),
)
"""The order the job starts its reads in: the largest tables first."""


def extract(
    engine: sa.Engine, wh: Warehouse, *, window_start: datetime, window_end: datetime | None
) -> SourceData:
    """Read the source tables for ``[window_start, window_end)``; see the module docs.

    Both bounds must be time-zone aware (naive datetimes raise ``ValueError``);
    ``window_end=None`` means no upper bound. Raises
    :class:`~warehouse.contract.ContractError` when tables or columns are missing.
    """
    _window(window_start, window_end)
    text_columns = text_time_columns(check_contract(engine, wh))

    def read(logical: str, snapshot: Snapshot | None) -> pl.DataFrame:
        query, exact = source_query(
            wh,
            logical,
            window_start=window_start,
            window_end=window_end,
            dialect=engine.dialect.name,
            text_columns=text_columns.get(logical, frozenset()),
        )
        schema = polars_schema(wh[logical])
        return read_frame(engine, query, schema, snapshot=snapshot).filter(exact)

    # Two tables at a time over ADBC, largest first: the database produces one table's rows
    # while this process converts the other's. On PostgreSQL each read has a connection of
    # its own and imports one snapshot; on SQLite the reads take turns on the connection of
    # one read transaction, and each converts its rows while the next is fetched.
    with shared_snapshot(engine) as snapshot:
        workers = READ_WORKERS if uses_adbc(engine) else 1
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="extract") as pool:
            futures = {name: pool.submit(read, name, snapshot) for name in SOURCE_READ_ORDER}
            frames = {name: futures[name].result() for name in SOURCE_TABLES}
    return SourceData(**frames)
