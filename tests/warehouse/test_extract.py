"""Extraction with the window pushed into SQL, on SQLite files and PostgreSQL schemas."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from tests.hardening.helpers import (
    holding,
    wait_until,
    waiting_backends,
    write_from_another_process,
)
from warehouse import extract as extract_module
from warehouse.db import engine_for
from warehouse.extract import SourceData, extract, source_query
from warehouse.io import SqliteReadTransaction, append_frame, read_frame, shared_snapshot
from warehouse.migrate import create_source_tables
from warehouse.schema import SOURCE_TABLES, Warehouse, build_warehouse, contract_schema
from warehouse.settings import Settings
from warehouse.validate import validate

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 4, 1, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))

# Timestamps as text, the way a warehouse loader might have written them; offsets included.
CUSTOMERS = [  # customer_id, signup_at
    (1, "2023-01-01T00:00:00Z"),
    (2, "2024-03-31 23:59:59.999999+00:00"),
    (3, "2024-04-01 00:00:00+00:00"),  # at window_end: out
    (4, "2024-04-01T04:00:00+05:30"),  # 2024-03-31 22:30 UTC: in
    (5, "2025-01-01 00:00:00+00:00"),  # future: out
]
SUBSCRIPTIONS = [  # customer_id, started_at, ended_at, plan (the label)
    (1, "2023-01-01 00:00:00+00:00", None, "open"),
    (1, "2023-01-01 00:00:00+00:00", "2024-02-29 23:59:59+00:00", "ended_before"),
    (1, "2023-01-01 00:00:00+00:00", "2024-03-01 00:00:00+00:00", "ended_at_start"),
    (2, "2024-04-01 00:00:00+00:00", None, "starts_at_end"),
    (2, "2024-03-20 00:00:00+00:00", "2024-03-25 00:00:00+00:00", "inside"),
    (1, "2023-01-01 00:00:00+00:00", "2024-03-01T03:00:00+05:30", "ended_before_ist"),
]
INTERACTIONS = [  # interaction_id, opened_at
    (1, "2024-02-29 23:59:59.999999+00:00"),
    (2, "2024-03-01 00:00:00+00:00"),
    (3, "2024-03-31 23:59:59.999999+00:00"),
    (4, "2024-04-01 00:00:00+00:00"),
    (5, "2024-03-01T03:00:00+05:30"),  # 2024-02-29 21:30 UTC: out
    (6, "2024-04-01T04:00:00+05:30"),  # 2024-03-31 22:30 UTC: in
    (7, "2023-01-01 00:00:00+00:00"),
    (8, "2025-06-01 00:00:00+00:00"),
]
ACTIVITY = [  # event_type (the label), occurred_at
    ("before", "2024-02-15 00:00:00+00:00"),
    ("first", "2024-03-01 00:00:00+00:00"),
    ("ist_inside", "2024-04-01T05:29:59+05:30"),
    ("last", "2024-03-31 23:59:59+00:00"),
    ("future", "2030-01-01 00:00:00+00:00"),
]
CONTACTS = [  # outcome (the label), contacted_at
    ("year_ago", "2023-03-15 00:00:00+00:00"),
    ("inside", "2024-03-15 12:00:00-07:00"),
    ("at_end", "2024-04-01 00:00:00+00:00"),
]


def _insert(engine: sa.Engine, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert rows with text timestamps through bound parameters."""
    columns = list(rows[0])
    preparer = engine.dialect.identifier_preparer
    names = ", ".join(preparer.quote(c) for c in columns)
    values = ", ".join(f":{c}" for c in columns)
    statement = sa.text(f"INSERT INTO {preparer.format_table(table)} ({names}) VALUES ({values})")
    with engine.begin() as conn:
        conn.execute(statement, rows)


def _load_window_rows(engine: sa.Engine, wh: Warehouse) -> None:
    create_source_tables(engine, wh)
    _insert(engine, wh["customers"], [{"customer_id": i, "signup_at": t} for i, t in CUSTOMERS])
    _insert(
        engine,
        wh["subscriptions"],
        [
            {"customer_id": c, "started_at": s, "ended_at": e, "plan": p}
            for c, s, e, p in SUBSCRIPTIONS
        ],
    )
    _insert(
        engine,
        wh["interactions"],
        [
            {
                "interaction_id": i,
                "customer_id": 1,
                "opened_at": t,
                "channel": "phone",
                "kind": "query",
                "is_public": False,
                "transfers": 0,
                "reopened": False,
            }
            for i, t in INTERACTIONS
        ],
    )
    _insert(
        engine,
        wh["activity"],
        [{"customer_id": 1, "occurred_at": t, "event_type": e} for e, t in ACTIVITY],
    )
    _insert(
        engine,
        wh["retention_contacts"],
        [{"customer_id": 1, "contacted_at": t, "outcome": o} for o, t in CONTACTS],
    )


@pytest.fixture
def loaded(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> Warehouse:
    wh = build_warehouse(make_isolated_settings())
    _load_window_rows(isolated_engine, wh)
    return wh


def test_window_is_applied_to_every_table(isolated_engine: sa.Engine, loaded: Warehouse) -> None:
    data = extract(isolated_engine, loaded, window_start=START, window_end=END)
    assert sorted(data.customers["customer_id"]) == [1, 2, 4]
    assert sorted(data.subscriptions["plan"]) == ["ended_at_start", "inside", "open"]
    assert sorted(data.interactions["interaction_id"]) == [2, 3, 6]
    assert sorted(data.activity["event_type"]) == ["first", "ist_inside", "last"]
    assert data.retention_contacts["outcome"].to_list() == ["inside"]
    for name, frame in data.frames().items():
        assert frame.schema == contract_schema(name)


def test_offsets_come_back_as_the_same_instants_in_utc(
    isolated_engine: sa.Engine, loaded: Warehouse
) -> None:
    data = extract(isolated_engine, loaded, window_start=START, window_end=END)
    opened = dict(data.interactions.select("interaction_id", "opened_at").iter_rows())
    assert opened[6] == datetime(2024, 3, 31, 22, 30, tzinfo=UTC)
    assert opened[3] == datetime(2024, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)
    signup = dict(data.customers.select("customer_id", "signup_at").iter_rows())
    assert signup[4] == datetime(2024, 4, 1, 4, tzinfo=IST)
    contact = data.retention_contacts["contacted_at"][0]
    assert contact == datetime(2024, 3, 15, 19, tzinfo=UTC)
    assert str(data.interactions.schema["opened_at"]) == str(pl.Datetime("us", "UTC"))


def test_window_bounds_in_other_zones_mean_the_same_instants(
    isolated_engine: sa.Engine, loaded: Warehouse
) -> None:
    data = extract(
        isolated_engine,
        loaded,
        window_start=START.astimezone(IST),
        window_end=END.astimezone(timezone(timedelta(hours=-8))),
    )
    assert sorted(data.interactions["interaction_id"]) == [2, 3, 6]


def test_the_window_is_filtered_in_sql(isolated_engine: sa.Engine, loaded: Warehouse) -> None:
    query, _ = source_query(
        loaded,
        "interactions",
        window_start=START,
        window_end=END,
        dialect=isolated_engine.dialect.name,
    )
    compiled = str(query.compile(dialect=isolated_engine.dialect))
    assert "2024" not in compiled
    with isolated_engine.connect() as conn:
        ids = {row.interaction_id for row in conn.execute(query)}
    # SQLite compares text, so its SQL window is two days wider; far-off rows never leave SQL.
    assert {7, 8}.isdisjoint(ids)
    assert {2, 3, 6} <= ids
    if isolated_engine.dialect.name == "postgresql":
        assert ids == {2, 3, 6}


def test_no_window_end_reads_future_rows(isolated_engine: sa.Engine, loaded: Warehouse) -> None:
    data = extract(isolated_engine, loaded, window_start=START, window_end=None)
    assert sorted(data.customers["customer_id"]) == [1, 2, 3, 4, 5]
    assert sorted(data.interactions["interaction_id"]) == [2, 3, 4, 6, 8]
    assert "future" in data.activity["event_type"].to_list()
    assert "starts_at_end" in data.subscriptions["plan"].to_list()


OLD_COMPLAINTS = [  # interaction_id, kind, opened_at, resolved_at
    (11, "complaint", "2023-06-01 00:00:00+00:00", None),  # never resolved: in
    (12, "complaint", "2023-06-01 00:00:00+00:00", "2024-02-01 00:00:00+00:00"),  # out
    (13, "complaint", "2024-01-01 00:00:00+00:00", "2024-03-01 00:00:00+00:00"),  # at start: in
    (14, "complaint", "2024-01-01 00:00:00+00:00", "2024-02-29 23:59:59+00:00"),  # out
    (15, " Complaint ", "2024-01-01 00:00:00+00:00", "2024-05-01 00:00:00+00:00"),  # in
    (16, "query", "2023-06-01 00:00:00+00:00", None),  # not a complaint: out
    (17, "complaint", "2024-04-01 00:00:00+00:00", None),  # opened at window_end: out
    (18, "complaint_followup", "2023-06-01 00:00:00+00:00", None),  # another kind: out
]


def test_complaints_still_open_at_the_window_start_are_read_however_old(
    isolated_engine: sa.Engine, loaded: Warehouse
) -> None:
    _insert(
        isolated_engine,
        loaded["interactions"],
        [
            {
                "interaction_id": i,
                "customer_id": 1,
                "opened_at": opened,
                "resolved_at": resolved,
                "channel": "email",
                "kind": kind,
                "is_public": False,
                "transfers": 0,
                "reopened": False,
            }
            for i, kind, opened, resolved in OLD_COMPLAINTS
        ],
    )
    data = extract(isolated_engine, loaded, window_start=START, window_end=END)
    assert sorted(data.interactions["interaction_id"]) == [2, 3, 6, 11, 13, 15]
    without_end = extract(isolated_engine, loaded, window_start=START, window_end=None)
    ids = sorted(without_end.interactions["interaction_id"])
    assert ids == [2, 3, 4, 6, 8, 11, 13, 15, 17]


def test_empty_tables_keep_the_schema(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    create_source_tables(isolated_engine, wh)
    data = extract(isolated_engine, wh, window_start=START, window_end=END)
    assert data.row_counts() == dict.fromkeys(SOURCE_TABLES, 0)
    for name, frame in data.frames().items():
        assert frame.schema == contract_schema(name)


def test_round_trip_of_every_column_type(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    create_source_tables(isolated_engine, wh)
    in_window = datetime(2024, 3, 10, 9, 15, 30, 123456, tzinfo=IST)
    frames = {
        "customers": pl.DataFrame(
            {
                "customer_id": [1, 2],
                "signup_at": [datetime(2020, 1, 1, tzinfo=IST), in_window],
                "segment": ["gold", None],
                "country": ["IN", "DE"],
                "language": [None, "de"],
                "monthly_value": [12.25, None],
            }
        ),
        "subscriptions": pl.DataFrame(
            {
                "customer_id": [1, 2],
                "started_at": [datetime(2020, 1, 1, tzinfo=UTC), in_window],
                "ended_at": [None, datetime(2024, 3, 20, tzinfo=IST)],
                "plan": ["basic", None],
                "mrr": [9.99, None],
            }
        ),
        "interactions": pl.DataFrame(
            {
                "interaction_id": [10, 11],
                "customer_id": [1, 2],
                "opened_at": [in_window, datetime(2024, 3, 2, tzinfo=UTC)],
                "channel": ["twitter", "phone"],
                "kind": ["complaint", "query"],
                "is_public": [True, False],
                "first_response_at": [in_window + timedelta(hours=30), None],
                "resolved_at": [None, datetime(2024, 3, 3, tzinfo=IST)],
                "transfers": [4, 0],
                "reopened": [True, False],
                "csat": [None, 5],
            }
        ),
        "activity": pl.DataFrame(
            {
                "customer_id": [1, 2],
                "occurred_at": [in_window, datetime(2024, 3, 5, tzinfo=UTC)],
                "event_type": ["refund", "login"],
                "value": [-20.5, None],
            }
        ),
        "retention_contacts": pl.DataFrame(
            {"customer_id": [1], "contacted_at": [in_window], "outcome": [None]},
            schema_overrides={"outcome": pl.String},
        ),
    }
    with isolated_engine.begin() as conn:
        for name, frame in frames.items():
            append_frame(conn, wh[name], frame)
    data = extract(isolated_engine, wh, window_start=START, window_end=END)
    expected = SourceData.from_frames(frames)
    for name, frame in data.frames().items():
        key = frame.columns[0] if name != "retention_contacts" else "contacted_at"
        assert_frame_equal(frame.sort(key), expected.frames()[name].sort(key))


def test_configured_table_names_and_schema(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    settings = make_isolated_settings(
        tables={"interactions": "crm_contacts", "customers": "crm_people"}
    )
    wh = build_warehouse(settings)
    _load_window_rows(isolated_engine, wh)
    tables = set(sa.inspect(isolated_engine).get_table_names(schema=settings.source_schema))
    assert {"crm_contacts", "crm_people"} <= tables
    assert "interactions" not in tables
    data = extract(isolated_engine, wh, window_start=START, window_end=END)
    assert sorted(data.interactions["interaction_id"]) == [2, 3, 6]
    assert sorted(data.customers["customer_id"]) == [1, 2, 4]


def test_only_contract_columns_are_read(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    create_source_tables(isolated_engine, wh)
    table = wh["activity"]
    preparer = isolated_engine.dialect.identifier_preparer
    with isolated_engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN notes TEXT"))
    _insert(
        isolated_engine,
        table,
        [{"customer_id": 1, "occurred_at": "2024-03-02 00:00:00+00:00", "event_type": "x"}],
    )
    data = extract(isolated_engine, wh, window_start=START, window_end=END)
    assert data.activity.columns == contract_schema("activity").names()


def _without_not_null(engine: sa.Engine, table: sa.Table) -> None:
    """Recreate the (empty) table with every column nullable, as a loose warehouse has it."""
    with engine.begin() as conn:
        conn.execute(sa.schema.DropTable(table))
        sa.Table(
            table.name,
            sa.MetaData(),
            *(sa.Column(c.name, c.type) for c in table.columns),
            schema=table.schema,
        ).create(conn)


def test_null_event_times_are_read_so_validation_counts_them(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    create_source_tables(isolated_engine, wh)
    table = wh["interactions"]
    _without_not_null(isolated_engine, table)
    base = {"customer_id": 1, "channel": "chat", "kind": "query", "is_public": False}
    base |= {"transfers": 0, "reopened": False}
    _insert(
        isolated_engine,
        wh["customers"],
        [{"customer_id": 1, "signup_at": "2023-01-01 00:00:00+00:00"}],
    )
    _insert(
        isolated_engine,
        table,
        [
            {**base, "interaction_id": 1, "opened_at": None},
            {**base, "interaction_id": 2, "opened_at": "2024-03-05 00:00:00+00:00"},
            {**base, "interaction_id": 3, "opened_at": "2022-03-05 00:00:00+00:00"},
        ],
    )
    data = extract(isolated_engine, wh, window_start=START, window_end=END)
    assert sorted(data.interactions["interaction_id"]) == [1, 2]
    clean, report = validate(data, as_of=END, known_channels=["chat"])
    assert report.quarantined["interactions"] == {"null_required:opened_at": 1}
    assert clean.interactions["interaction_id"].to_list() == [2]


def test_activity_without_a_time_is_read_beside_the_window_and_counted(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    create_source_tables(isolated_engine, wh)
    table = wh["activity"]
    _without_not_null(isolated_engine, table)
    _insert(
        isolated_engine,
        wh["customers"],
        [{"customer_id": 1, "signup_at": "2023-01-01 00:00:00+00:00"}],
    )
    base = {"customer_id": 1, "event_type": "login"}
    _insert(
        isolated_engine,
        table,
        [
            {**base, "value": 1.0, "occurred_at": None},
            {**base, "value": 2.0, "occurred_at": "2024-03-05 00:00:00+00:00"},
            {**base, "value": 3.0, "occurred_at": "2022-03-05 00:00:00+00:00"},
            {**base, "value": 4.0, "occurred_at": "2024-04-05 00:00:00+00:00"},
        ],
    )
    query, _ = source_query(
        wh, "activity", window_start=START, window_end=END, dialect=isolated_engine.dialect.name
    )
    if isolated_engine.dialect.name == "postgresql":
        # The window and the rows without a time are separate SELECTs, so each can use an index.
        assert isinstance(query, sa.CompoundSelect)
        assert " OR " not in str(query.compile(dialect=isolated_engine.dialect))
    data = extract(isolated_engine, wh, window_start=START, window_end=END)
    assert sorted(data.activity["value"].to_list()) == [1.0, 2.0]
    clean, report = validate(data, as_of=END, known_channels=["chat"])
    assert report.quarantined["activity"] == {"null_required:occurred_at": 1}
    assert clean.activity["value"].to_list() == [2.0]


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (datetime(2024, 3, 1), END, "window_start .* has no time zone"),
        (START, datetime(2024, 4, 1), "window_end .* has no time zone"),
        (END, START, "must be later than window_start"),
        (START, START, "must be later than window_start"),
    ],
)
def test_bad_windows_are_rejected(
    start: datetime, end: datetime, message: str, sqlite_url: str
) -> None:
    settings = Settings(warehouse_url=sqlite_url)  # type: ignore[arg-type]
    engine = engine_for(settings)
    with pytest.raises(ValueError, match=message):
        extract(engine, build_warehouse(settings), window_start=start, window_end=end)
    engine.dispose()


def test_source_data_helpers() -> None:
    data = SourceData.from_frames(
        {"activity": pl.DataFrame({"customer_id": [1], "event_type": ["login"]})}
    )
    assert data.row_counts() == {
        "customers": 0,
        "subscriptions": 0,
        "interactions": 0,
        "activity": 1,
        "retention_contacts": 0,
    }
    lazy = data.lazy()
    assert list(lazy) == list(SOURCE_TABLES)
    assert lazy["activity"].collect().schema == contract_schema("activity")
    with pytest.raises(ValueError, match="unknown source table"):
        SourceData.from_frames({"orders": pl.DataFrame()})


@pytest.mark.postgres
def test_naive_timestamp_columns_are_utc_whatever_the_session_zone(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(pg_url)
    wh = build_warehouse(settings)
    engine = engine_for(settings)
    database = sa.engine.make_url(pg_url).database
    create_source_tables(engine, wh)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET timezone = 'Asia/Kolkata'"))
        conn.execute(sa.text("ALTER TABLE activity ALTER COLUMN occurred_at TYPE timestamp"))
    engine.dispose()
    _insert(
        engine,
        wh["activity"],
        [
            {"customer_id": 1, "occurred_at": "2024-02-29 23:00:00", "event_type": "before"},
            {"customer_id": 1, "occurred_at": "2024-03-01 00:30:00", "event_type": "inside"},
        ],
    )
    data = extract(engine, wh, window_start=START, window_end=END)
    assert data.activity.select("event_type", "occurred_at").rows() == [
        ("inside", datetime(2024, 3, 1, 0, 30, tzinfo=UTC))
    ]
    engine.dispose()


# -- one instant for all five tables (PostgreSQL) ---------------------------------------------


def _loaded(
    url: str, make_settings: Callable[..., Settings]
) -> Iterator[tuple[sa.Engine, Warehouse]]:
    """The window rows loaded into the empty warehouse at ``url``, with its engine."""
    settings = make_settings(url)
    wh = build_warehouse(settings)
    engine = engine_for(settings)
    try:
        _load_window_rows(engine, wh)
        yield engine, wh
    finally:
        engine.dispose()


@pytest.fixture
def pg_loaded(
    pg_url: str, make_settings: Callable[..., Settings]
) -> Iterator[tuple[sa.Engine, Warehouse]]:
    """A fresh PostgreSQL database holding the window rows, with its engine."""
    yield from _loaded(pg_url, make_settings)


@pytest.mark.postgres
def test_reads_given_a_shared_snapshot_do_not_see_later_commits(
    pg_loaded: tuple[sa.Engine, Warehouse],
) -> None:
    engine, wh = pg_loaded
    table = wh["customers"]
    query = sa.select(table.c.customer_id).order_by(table.c.customer_id)
    schema = pl.Schema({"customer_id": pl.Int64()})
    with shared_snapshot(engine) as snapshot:
        assert snapshot is not None
        _insert(engine, table, [{"customer_id": 99, "signup_at": "2024-03-10 00:00:00Z"}])
        as_of_snapshot = read_frame(engine, query, schema, snapshot=snapshot)
        latest = read_frame(engine, query, schema)
    assert 99 not in as_of_snapshot["customer_id"].to_list()
    assert 99 in latest["customer_id"].to_list()


@pytest.mark.postgres
def test_the_five_tables_are_read_as_of_one_instant(
    pg_url: str, pg_loaded: tuple[sa.Engine, Warehouse]
) -> None:
    """A customer committed while the first reads wait is in none of the tables read later.

    Both read workers are held on their first tables (activity, interactions) by a session
    that locks them; a loader then commits a new customer; the customers table, read after
    the locks are released, must still not show it.
    """
    engine, wh = pg_loaded
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    database = str(sa.engine.make_url(pg_url).database)
    result: dict[str, SourceData] = {}
    try:
        with holding(pg_url, "LOCK TABLE activity, interactions IN ACCESS EXCLUSIVE MODE") as lock:
            reader = threading.Thread(
                target=lambda: result.setdefault(
                    "data", extract(engine, wh, window_start=START, window_end=END)
                )
            )
            reader.start()
            wait_until(
                lambda: len(waiting_backends(admin, database, wait_event_type="Lock")) >= 2,
                timeout=30,
                what="both reads to wait for the locked tables",
            )
            _insert(engine, wh["customers"], [{"customer_id": 99, "signup_at": "2024-03-10Z"}])
            lock.rollback()
            reader.join(timeout=60)
    finally:
        admin.dispose()
    assert not reader.is_alive()
    assert sorted(result["data"].customers["customer_id"].to_list()) == [1, 2, 4]


# -- one instant for all five tables (SQLite file) --------------------------------------------


@pytest.fixture
def sqlite_loaded(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> Iterator[tuple[sa.Engine, Warehouse]]:
    """A fresh SQLite file (rollback-journal mode) holding the window rows, with its engine."""
    yield from _loaded(sqlite_url, make_settings)


def _in_wal_mode(engine: sa.Engine) -> str:
    """Switch the SQLite file to WAL mode, where a loader commits while the job reads."""
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar() == "wal"
    return str(engine.url.database)


NEW_CUSTOMER = [
    "INSERT INTO customers (customer_id, signup_at) VALUES (99, '2024-03-10 00:00:00')",
    "INSERT INTO interactions (interaction_id, customer_id, opened_at, channel, kind, "
    "is_public, transfers, reopened) VALUES (990, 99, '2024-03-11 00:00:00', 'phone', "
    "'query', 0, 0, 0)",
]


def test_sqlite_reads_given_a_shared_snapshot_do_not_see_later_commits(
    sqlite_loaded: tuple[sa.Engine, Warehouse],
) -> None:
    """In WAL mode a loader commits while the reads go on; they still see the first instant."""
    engine, wh = sqlite_loaded
    database = _in_wal_mode(engine)
    table = wh["customers"]
    query = sa.select(table.c.customer_id).order_by(table.c.customer_id)
    schema = pl.Schema({"customer_id": pl.Int64()})
    with shared_snapshot(engine) as snapshot:
        assert isinstance(snapshot, SqliteReadTransaction)
        assert write_from_another_process(database, NEW_CUSTOMER, timeout=5) == "committed"
        as_of_snapshot = read_frame(engine, query, schema, snapshot=snapshot)
    latest = read_frame(engine, query, schema)
    assert 99 not in as_of_snapshot["customer_id"].to_list()
    assert 99 in latest["customer_id"].to_list()


def test_sqlite_loads_wait_for_the_read_transaction_in_rollback_journal_mode(
    sqlite_loaded: tuple[sa.Engine, Warehouse],
) -> None:
    engine, _ = sqlite_loaded
    database = str(engine.url.database)
    with shared_snapshot(engine) as snapshot:
        assert isinstance(snapshot, SqliteReadTransaction)
        load = write_from_another_process(database, NEW_CUSTOMER, timeout=0.3)
        assert load == "database is locked"
    assert write_from_another_process(database, NEW_CUSTOMER, timeout=0.3) == "committed"


def test_the_five_sqlite_tables_are_read_as_of_one_instant(
    sqlite_loaded: tuple[sa.Engine, Warehouse], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loader commits a customer and their interaction right after the first table is read
    (WAL mode, so it does not wait): neither shows in the tables read after it."""
    engine, wh = sqlite_loaded
    database = _in_wal_mode(engine)
    read, committed, once = extract_module.read_frame, [], threading.Lock()

    def read_then_load(*args: Any, **kwargs: Any) -> pl.DataFrame:
        frame = read(*args, **kwargs)
        with once:
            if not committed:
                committed.append(write_from_another_process(database, NEW_CUSTOMER, timeout=5))
        return frame

    monkeypatch.setattr(extract_module, "read_frame", read_then_load)
    data = extract(engine, wh, window_start=START, window_end=END)
    assert committed == ["committed"]
    assert sorted(data.customers["customer_id"].to_list()) == [1, 2, 4]
    assert 990 not in data.interactions["interaction_id"].to_list()
    again = extract(engine, wh, window_start=START, window_end=END)
    assert 99 in again.customers["customer_id"].to_list()
    assert 990 in again.interactions["interaction_id"].to_list()


def test_snapshots_belong_to_their_own_kind_of_database(
    tmp_path: Any, sqlite_loaded: tuple[sa.Engine, Warehouse]
) -> None:
    memory = sa.create_engine("sqlite://")
    other_file = sa.create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    query = sa.select(sa.literal(1).label("x"))
    schema = pl.Schema({"x": pl.Int64()})
    with shared_snapshot(memory) as snapshot:
        assert snapshot is None
    with pytest.raises(ValueError, match="PostgreSQL snapshot identifiers cannot be used"):
        read_frame(other_file, query, schema, snapshot="00000003-0000001B-1")
    engine, _ = sqlite_loaded
    with shared_snapshot(engine) as snapshot:
        assert snapshot is not None
        with pytest.raises(ValueError, match="the read transaction is on"):
            read_frame(other_file, query, schema, snapshot=snapshot)
        with pytest.raises(ValueError, match="cannot be used on postgresql"):
            read_frame(
                sa.create_engine("postgresql+psycopg://u@h/d"), query, schema, snapshot=snapshot
            )
    memory.dispose()
    other_file.dispose()
