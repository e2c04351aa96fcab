"""Engines, reads and writes against a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pytest
import sqlalchemy as sa
from polars.testing import assert_frame_equal

from tests.hardening.helpers import write_from_another_process
from warehouse.db import (
    WarehouseUnavailable,
    adbc_uri,
    check_connection,
    engine_for,
    engine_for_url,
    is_transient,
    normalise_url,
)
from warehouse.io import (
    _insert_generic,
    adbc_connection,
    append_frame,
    bulk_load,
    conform,
    for_table,
    read_frame,
    sqlite_library,
)
from warehouse.migrate import create_source_tables, init_db
from warehouse.outputs import heartbeat, start_run
from warehouse.schema import Warehouse, build_warehouse, polars_schema
from warehouse.settings import Settings

IST = timezone(timedelta(hours=5, minutes=30))
NEWFOUNDLAND = timezone(timedelta(hours=-3, minutes=-30))

Writer = Callable[[sa.Engine, sa.Table, pl.DataFrame], int]


@pytest.fixture
def settings(make_isolated_settings: Callable[..., Settings]) -> Settings:
    """A fresh SQLite file, or a fresh schema in the module's PostgreSQL database."""
    return make_isolated_settings()


def _append(engine: sa.Engine, table: sa.Table, frame: pl.DataFrame) -> int:
    with engine.begin() as conn:
        return append_frame(conn, table, frame)


WRITERS = [pytest.param(_append, id="append_frame"), pytest.param(bulk_load, id="bulk_load")]


def _interactions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "interaction_id": [1, 2, 3],
            "customer_id": [10, 10, 11],
            "opened_at": [
                datetime(2024, 3, 1, 9, 15, 30, 123456, tzinfo=IST),
                datetime(2024, 3, 1, 23, 59, 59, tzinfo=NEWFOUNDLAND),
                datetime(2024, 3, 2, 0, 0, tzinfo=UTC),
            ],
            "channel": ["phone", 'tw"itter, "quoted"', ""],
            "kind": ["complaint", "réclamation\nmultiline", "\\N"],
            "is_public": [True, False, True],
            "first_response_at": [None, datetime(2024, 3, 2, 10, tzinfo=IST), None],
            "resolved_at": [None, None, datetime(2024, 3, 3, tzinfo=UTC)],
            "transfers": [0, 3, 12],
            "reopened": [False, True, False],
            "csat": [None, 5, 1],
        },
        schema_overrides={"first_response_at": pl.Datetime("us", "UTC")},
    )


def _customers() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "customer_id": [10, 11, 9_007_199_254_740_993],
            "signup_at": [
                datetime(2020, 1, 1, tzinfo=IST),
                datetime(2021, 6, 30, 12, tzinfo=UTC),
                datetime(1999, 12, 31, 23, 59, tzinfo=NEWFOUNDLAND),
            ],
            "segment": ["gold", None, "silver"],
            "country": ["IN", "DE", None],
            "language": [None, "de", "en"],
            "monthly_value": [12.5, None, 0.1],
        }
    )


def _read_all(engine: sa.Engine, table: sa.Table, order_by: str) -> pl.DataFrame:
    query = sa.select(*table.c).order_by(table.c[order_by])
    return read_frame(engine, query, polars_schema(table))


@pytest.mark.parametrize("write", WRITERS)
def test_every_column_type_round_trips_as_utc_instants(
    engine: sa.Engine, sources: Warehouse, write: Writer
) -> None:
    for name, frame, key in [
        ("interactions", _interactions(), "interaction_id"),
        ("customers", _customers(), "customer_id"),
    ]:
        table = sources[name]
        assert write(engine, table, frame) == frame.height
        back = _read_all(engine, table, key)
        expected = conform(frame, polars_schema(table), source=name)
        assert back.schema == polars_schema(table)
        assert_frame_equal(back, expected)
    opened = _read_all(engine, sources["interactions"], "interaction_id")["opened_at"]
    assert opened[0] == datetime(2024, 3, 1, 3, 45, 30, 123456, tzinfo=UTC)
    assert opened[1] == datetime(2024, 3, 2, 3, 29, 59, tzinfo=UTC)


def test_read_binds_parameters_instead_of_inlining(engine: sa.Engine, sources: Warehouse) -> None:
    table = sources["customers"]
    frame = _customers().with_columns(
        pl.Series("segment", ["O'Brien'); DROP TABLE customers; --", None, "silver"])
    )
    _append(engine, table, frame)
    query = (
        sa.select(*table.c)
        .where(
            table.c.segment == "O'Brien'); DROP TABLE customers; --",
            table.c.customer_id.in_([10, 11, 12]),
            table.c.signup_at < datetime(2020, 1, 2, tzinfo=UTC),
        )
        .limit(5)
    )
    result = read_frame(engine, query, polars_schema(table))
    assert result["customer_id"].to_list() == [10]
    assert _read_all(engine, table, "customer_id").height == 3


def test_naive_datetime_parameters_are_rejected(engine: sa.Engine, sources: Warehouse) -> None:
    table = sources["customers"]
    query = sa.select(*table.c).where(table.c.signup_at < datetime(2020, 1, 1))
    with pytest.raises(ValueError, match="no time zone"):
        read_frame(engine, query, polars_schema(table))


def test_empty_result_keeps_the_schema(engine: sa.Engine, sources: Warehouse) -> None:
    for table in sources.sources.values():
        result = read_frame(engine, sa.select(*table.c), polars_schema(table))
        assert result.height == 0
        assert result.schema == polars_schema(table)


def test_append_in_rolled_back_transaction_leaves_nothing(
    engine: sa.Engine, sources: Warehouse
) -> None:
    table = sources["interactions"]
    with engine.connect() as conn:
        transaction = conn.begin()
        assert append_frame(conn, table, _interactions()) == 3
        inside = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        assert inside == 3
        transaction.rollback()
    assert _read_all(engine, table, "interaction_id").height == 0


def test_append_is_atomic_with_a_delete(engine: sa.Engine, sources: Warehouse) -> None:
    table = sources["interactions"]
    _append(engine, table, _interactions())
    replacement = _interactions().with_columns(pl.col("transfers") + 100)
    with engine.begin() as conn:
        conn.execute(sa.delete(table))
        append_frame(conn, table, replacement)
    assert _read_all(engine, table, "interaction_id")["transfers"].to_list() == [100, 103, 112]


def test_append_empty_frame_writes_nothing(engine: sa.Engine, sources: Warehouse) -> None:
    table = sources["activity"]
    empty = pl.DataFrame(schema=polars_schema(table))
    with engine.begin() as conn:
        assert append_frame(conn, table, empty) == 0
    assert bulk_load(engine, table, empty) == 0


def test_json_columns_take_dicts_and_json_text(engine: sa.Engine, wh: Warehouse) -> None:
    init_db(engine, wh)
    table = wh["scoring_runs"]
    started = datetime(2024, 5, 1, 2, tzinfo=UTC)
    runs = pl.DataFrame(
        {
            "run_id": ["a", "b"],
            "kind": ["score", "score"],
            "status": ["succeeded", "failed"],
            "started_at": [started, started],
            "timings": [{"extract": 1.5}, None],
        },
        schema_overrides={"timings": pl.Object},
    ).with_columns(pl.Series("data_quality", ['{"rows": [1, 2]}', None]))
    assert bulk_load(engine, table, runs) == 2
    back = read_frame(
        engine,
        sa.select(table.c.run_id, table.c.timings, table.c.data_quality),
        pl.Schema({"run_id": pl.String, "timings": pl.String, "data_quality": pl.String}),
    )
    assert back.sort("run_id").rows() == [
        ("a", '{"extract": 1.5}', '{"rows": [1, 2]}'),
        ("b", None, None),
    ]
    with engine.connect() as conn:
        timings = conn.execute(sa.select(table.c.timings).where(table.c.run_id == "a")).scalar()
    assert timings == {"extract": 1.5}
    not_json = runs.with_columns(pl.Series("data_quality", ["{oops", None]), run_id=pl.lit("c"))
    with pytest.raises(ValueError, match=r"scoring_runs\.data_quality: 1 of 2 rows are not JSON"):
        _append(engine, table, not_json.head(2))


def test_for_table_rejects_columns_the_table_lacks(wh: Warehouse) -> None:
    frame = _interactions().with_columns(pl.lit(1).alias("sentiment"))
    with pytest.raises(ValueError, match="interactions has no column"):
        for_table(frame, wh["interactions"])


def test_values_out_of_range_for_the_column_type_are_named(wh: Warehouse) -> None:
    frame = _interactions().with_columns(pl.Series("transfers", [1, 2**40, 2**41]))
    with pytest.raises(ValueError, match=r"interactions\.transfers: 2 of 3 rows"):
        for_table(frame, wh["interactions"])


# -- SQLite text storage ---------------------------------------------------------------------


class SqliteFile(NamedTuple):
    engine: sa.Engine
    wh: Warehouse
    path: str


@pytest.fixture
def sqlite_file(sqlite_url: str, make_settings: Callable[..., Settings]) -> Iterator[SqliteFile]:
    """A fresh SQLite file with the five source tables, empty."""
    settings = make_settings(sqlite_url)
    wh = build_warehouse(settings)
    engine = engine_for(settings)
    create_source_tables(engine, wh)
    try:
        yield SqliteFile(engine, wh, adbc_uri(settings.url))
    finally:
        engine.dispose()


def test_sqlite_text_timestamps_in_any_iso_form(sqlite_file: SqliteFile) -> None:
    engine, wh, database = sqlite_file
    texts = [
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00.250000",
        "2024-01-01T10:00:00+05:30",
        "2024-01-01T10:00:00Z",
        "2024-01-01 10:00:00.5-0300",
        "2024-01-01 10:00",
        "2024-01-01",
    ]
    with sqlite3.connect(database) as raw:
        raw.executemany(
            "INSERT INTO customers (customer_id, signup_at) VALUES (?, ?)", list(enumerate(texts))
        )
    signups = _read_all(engine, wh["customers"], "customer_id")["signup_at"].to_list()
    assert signups == [
        datetime(2024, 1, 1, 10, tzinfo=UTC),
        datetime(2024, 1, 1, 10, 0, 0, 250000, tzinfo=UTC),
        datetime(2024, 1, 1, 4, 30, tzinfo=UTC),
        datetime(2024, 1, 1, 10, tzinfo=UTC),
        datetime(2024, 1, 1, 13, 0, 0, 500000, tzinfo=UTC),
        datetime(2024, 1, 1, 10, tzinfo=UTC),
        datetime(2024, 1, 1, tzinfo=UTC),
    ]


def test_fast_sqlite_reads_wait_for_a_transaction_of_the_other_sqlite_library(
    sqlite_file: SqliteFile,
) -> None:
    """The ADBC driver has its own copy of SQLite: a read through it that ended beside a
    write transaction of Python's copy (a heartbeat, say) would drop that transaction's
    POSIX locks and let another process write in the middle of it."""
    engine, wh, database = sqlite_file
    table = wh["customers"]
    assert _read_all(engine, table, "customer_id").height == 0  # the driver is loaded
    in_transaction, commit = threading.Event(), threading.Event()

    def write() -> None:
        with sqlite_library(engine, "python"), engine.begin() as conn:
            conn.execute(table.insert().values(customer_id=1, signup_at=datetime(2026, 1, 1)))
            in_transaction.set()
            assert commit.wait(60)

    with ThreadPoolExecutor(max_workers=2) as pool:
        writer = pool.submit(write)
        assert in_transaction.wait(60)
        reader = pool.submit(_read_all, engine, table, "customer_id")
        time.sleep(1.0)
        assert not reader.done()  # waits for the transaction to end
        assert write_from_another_process(database, timeout=0) == "database is locked"
        commit.set()
        writer.result(timeout=60)
        assert reader.result(timeout=60)["customer_id"].to_list() == [1]
    assert write_from_another_process(database, timeout=0) == "committed"


def test_a_heartbeat_waits_for_fast_sqlite_reads_to_end(sqlite_file: SqliteFile) -> None:
    engine, wh, _ = sqlite_file
    init_db(engine, wh)
    run_id = start_run(engine, wh, kind="nightly", as_of=None)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with adbc_connection(engine) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM customers")
            beat = pool.submit(heartbeat, engine, wh, run_id)
            time.sleep(0.5)
            assert not beat.done()
            assert cursor.fetch_arrow_table().num_rows == 1
        assert beat.result(timeout=60) is True
    with sqlite_library(engine, "python"), pytest.raises(RuntimeError, match="adbc copy"):
        _read_all(engine, wh["customers"], "customer_id")


def test_sqlite_unreadable_values_name_table_column_and_count(sqlite_file: SqliteFile) -> None:
    engine, wh, database = sqlite_file
    with sqlite3.connect(database) as raw:
        raw.executemany(
            "INSERT INTO activity (customer_id, occurred_at, event_type, value) VALUES (?,?,?,?)",
            [
                (1, "2024-01-01 00:00:00", "login", 1.0),
                ("abc", "2024-01-01 00:00:00", "login", None),
                ("x1", "2024-01-02 00:00:00", "order", 2),
            ],
        )
    table = wh["activity"]
    with pytest.raises(ValueError, match=r"activity\.customer_id: 2 of 3 rows cannot be read"):
        _read_all(engine, table, "occurred_at")
    with sqlite3.connect(database) as raw:
        raw.execute("DELETE FROM activity WHERE customer_id IN ('abc', 'x1')")
        raw.execute("INSERT INTO activity VALUES (2, 'yesterday', 'login', NULL)")
    with pytest.raises(ValueError, match=r"activity\.occurred_at: 1 of 2 rows .*'yesterday'"):
        _read_all(engine, table, "customer_id")


def test_sqlite_column_null_for_many_rows_then_typed(sqlite_file: SqliteFile) -> None:
    engine, wh, database = sqlite_file
    rows: list[tuple[int, str, str, float | None]] = [
        (i, "2024-01-01 00:00:00", "login", None) for i in range(3000)
    ]
    rows += [(3000, "2024-01-01 00:00:00", "order", 2), (3001, "2024-01-01", "order", 2.5)]
    with sqlite3.connect(database) as raw:
        raw.executemany("INSERT INTO activity VALUES (?,?,?,?)", rows)
    values = _read_all(engine, wh["activity"], "customer_id")["value"]
    assert values.null_count() == 3000
    assert values.tail(2).to_list() == [2.0, 2.5]


def test_generic_path_for_in_memory_sqlite() -> None:
    engine = engine_for_url("sqlite://")
    wh = build_warehouse(Settings())
    create_source_tables(engine, wh)
    table = wh["interactions"]
    _append(engine, table, _interactions())
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE interactions SET resolved_at = :text WHERE interaction_id = 1"),
            {"text": "2024-03-05T01:00:00+01:00"},
        )
    back = _read_all(engine, table, "interaction_id")
    assert back.schema == polars_schema(table)
    assert back["resolved_at"][0] == datetime(2024, 3, 5, 0, tzinfo=UTC)
    assert back["is_public"].to_list() == [True, False, True]
    empty = read_frame(engine, sa.select(*table.c).where(table.c.transfers < 0), back.schema)
    assert empty.schema == back.schema
    engine.dispose()


# -- conform, without a database -------------------------------------------------------------


def test_conform_converts_storage_types() -> None:
    raw = pl.DataFrame(
        {
            "flag": [1, 0, None],
            "text_flag": ["true", " F ", None],
            "whole": [1.0, 2.0, None],
            "text_whole": ["3", "4.0", None],
            "naive": [datetime(2024, 1, 1), None, datetime(2024, 1, 2)],
        }
    )
    schema = pl.Schema(
        {
            "naive": pl.Datetime("us", "UTC"),
            "flag": pl.Boolean(),
            "text_flag": pl.Boolean(),
            "whole": pl.Int64(),
            "text_whole": pl.Int64(),
        }
    )
    result = conform(raw, schema, source="t")
    assert result.schema == schema
    assert result.row(0) == (datetime(2024, 1, 1, tzinfo=UTC), True, True, 1, 3)
    assert result.row(1) == (None, False, False, 2, 4)


@pytest.mark.parametrize(
    ("values", "dtype", "failures"),
    [
        ([1, 0, 7], pl.Boolean, 1),
        ([1.5, 2.0, None], pl.Int64, 1),
        (["a", "1", "b"], pl.Float64, 2),
        (["2024-13-01", "2024-01-01", "soon"], pl.Datetime("us", "UTC"), 2),
    ],
)
def test_conform_names_column_and_failed_rows(
    values: list[object], dtype: pl.DataType, failures: int
) -> None:
    with pytest.raises(ValueError, match=rf"^orders\.amount: {failures} of 3 rows"):
        conform(pl.DataFrame({"amount": values}), pl.Schema({"amount": dtype}), source="orders")


def test_conform_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="orders: the result has no column"):
        conform(pl.DataFrame({"a": [1]}), pl.Schema({"b": pl.Int64}), source="orders")


# -- engines and connections -----------------------------------------------------------------


def test_postgres_urls_use_psycopg() -> None:
    for url in ("postgresql://u:p@h/db", "postgres://u:p@h/db"):
        assert normalise_url(url).drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://h/db").drivername == "postgresql+psycopg"
    assert adbc_uri("postgresql+psycopg://u:p%40ss@h:5433/db") == "postgresql://u:p%40ss@h:5433/db"
    assert adbc_uri("sqlite:////tmp/w.db") == "/tmp/w.db"
    with pytest.raises(ValueError, match="in-memory"):
        adbc_uri("sqlite://")


def test_unreachable_postgres_is_reported_with_masked_url() -> None:
    engine = engine_for_url("postgresql://retention:s3cret-pw@127.0.0.1:1/warehouse")
    with pytest.raises(WarehouseUnavailable) as caught:
        check_connection(engine)
    message = str(caught.value)
    assert "s3cret-pw" not in message
    assert "retention:***@127.0.0.1:1/warehouse" in message
    assert "\n" not in message
    assert is_transient(caught.value)


def test_unreachable_sqlite_is_reported(tmp_path: Path) -> None:
    engine = engine_for_url(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'w.db'}")
    with pytest.raises(WarehouseUnavailable, match="cannot reach the warehouse at sqlite"):
        check_connection(engine)


def test_reachable_warehouse_passes_the_check(engine: sa.Engine) -> None:
    check_connection(engine)


@pytest.mark.postgres
def test_terminated_connection_is_transient_and_bad_sql_is_not(pg_url: str) -> None:
    engine = engine_for_url(pg_url)
    with engine.connect() as victim:
        pid = victim.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as admin:
            admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as dropped:
            victim.execute(sa.text("SELECT 1"))
    assert is_transient(dropped.value)
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as bad_sql:
        conn.execute(sa.text("SELEC 1"))
    assert not is_transient(bad_sql.value)
    engine.dispose()


def test_locked_sqlite_is_transient() -> None:
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert not is_transient(sqlite3.OperationalError("no such table: customers"))


def test_core_insert_path_used_for_other_dialects(engine: sa.Engine, wh: Warehouse) -> None:
    init_db(engine, wh)
    create_source_tables(engine, wh)
    runs = wh["scoring_runs"]
    frame = pl.DataFrame(
        {
            "run_id": ["r"],
            "kind": ["score"],
            "status": ["running"],
            "started_at": [datetime(2024, 1, 1, 6, tzinfo=IST)],
            "timings": ['{"extract": 2}'],
        }
    )
    with engine.begin() as conn:
        _insert_generic(conn, runs, for_table(frame, runs))
        _insert_generic(conn, wh["interactions"], for_table(_interactions(), wh["interactions"]))
    with engine.connect() as conn:
        assert conn.execute(sa.select(runs.c.timings)).scalar() == {"extract": 2}
    back = _read_all(engine, wh["interactions"], "interaction_id")
    assert_frame_equal(back, conform(_interactions(), back.schema, source="interactions"))


@pytest.mark.postgres
def test_a_password_with_spaces_reaches_postgresql_over_adbc(pg_url: str) -> None:
    """libpq refuses unescaped spaces in a URI, quoting the password in its error."""
    url = sa.engine.make_url(pg_url).set(password="pass word+&=:/@ é")
    text = url.render_as_string(hide_password=False)
    uri = adbc_uri(text)
    assert " " not in uri
    engine = engine_for_url(text)
    try:
        with adbc_connection(engine) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    finally:
        engine.dispose()
