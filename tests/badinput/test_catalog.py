"""The bad-input catalog as tests: every case in ``corpus.CATALOG`` on each of its backends.

Each test copies the base warehouse, damages the copy with real SQL, runs the nightly job
for today and asserts how it ended (see :mod:`tests.badinput.corpus`): a failure is the
exact exception type with a message naming what is wrong, recorded in ``scoring_runs``
with the previous list untouched; a success has exactly the expected quarantine and
normalisation counts in ``scoring_runs.data_quality`` and the new list written.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from features.build import snapshot_cutoff
from flows.nightly import RunResult, score_day
from tests.badinput.conftest import BaseWarehouse, CopyBase
from tests.badinput.corpus import CATALOG, POSTGRES, Case, Fails, Ran, Site, Succeeds
from tests.conftest import create_pg_database, drop_pg_database
from warehouse.db import engine_for
from warehouse.extract import extract
from warehouse.migrate import create_source_tables
from warehouse.outputs import latest_runs, read_retention_list
from warehouse.schema import SOURCE_TABLES, Warehouse, build_warehouse
from warehouse.settings import Settings


def _params() -> list[Any]:
    params = []
    for case in CATALOG:
        for backend in case.backends:
            marks = [pytest.mark.postgres] if backend == POSTGRES else []
            params.append(pytest.param(case, backend, id=f"{case.name}-{backend}", marks=marks))
    return params


def _case_run(engine: sa.Engine, wh: Warehouse, base: BaseWarehouse) -> dict[str, Any]:
    """The newest nightly run that is not the base's own."""
    runs = latest_runs(engine, wh, limit=10).filter(
        (pl.col("kind") == "nightly") & (pl.col("run_id") != base.run_id)
    )
    assert runs.height >= 1, "the run was not recorded in scoring_runs"
    run = runs.row(0, named=True)
    run["data_quality"] = None if run["data_quality"] is None else json.loads(run["data_quality"])
    return run


def _list_runs(engine: sa.Engine, wh: Warehouse, base: BaseWarehouse) -> pl.DataFrame:
    return read_retention_list(engine, wh, as_of=base.as_of, listed_only=False)


def _assert_failed(
    expect: Fails,
    error: BaseException | None,
    run: dict[str, Any],
    rows: pl.DataFrame,
    base: BaseWarehouse,
) -> None:
    assert error is not None, f"the run succeeded; expected {expect.error.__name__}"
    assert type(error) is expect.error, f"{type(error).__name__}: {error}"
    assert re.search(expect.message, str(error), flags=re.DOTALL), str(error)
    assert run["status"] == "failed"
    assert run["error"].startswith(f"{type(error).__name__}: ")
    if expect.quality_recorded:
        assert run["data_quality"] is not None
        for table, n in expect.rows_read.items():
            assert run["data_quality"]["rows_read"][table] == n, table
    else:
        assert run["data_quality"] is None
    # A failed run leaves the previous list untouched.
    assert set(rows["run_id"].to_list()) == {base.run_id}
    assert rows.height == base.counts["scored"]


def _expected_rows_read(expect: Succeeds, base: BaseWarehouse) -> dict[str, int | None]:
    before: dict[str, int] = base.quality["rows_read"]
    expected: dict[str, int | None] = {
        table: before[table] + expect.rows_read_delta.get(table, 0) for table in SOURCE_TABLES
    }
    expected.update(expect.rows_read)
    return expected


def _assert_succeeded(
    expect: Succeeds,
    error: BaseException | None,
    result: RunResult | None,
    run: dict[str, Any],
    rows: pl.DataFrame,
    base: BaseWarehouse,
) -> None:
    assert error is None, f"{type(error).__name__}: {error}"
    assert result is not None and result.status == "succeeded"
    assert run["run_id"] == result.run_id and run["status"] == "succeeded"
    quality = run["data_quality"]
    assert quality["quarantined"] == {t: dict(expect.quarantined.get(t, {})) for t in SOURCE_TABLES}
    assert quality["normalised"] == {t: dict(expect.normalised.get(t, {})) for t in SOURCE_TABLES}
    n_quarantined = sum(sum(rules.values()) for rules in expect.quarantined.values())
    assert run["n_quarantined"] == quality["n_quarantined"] == n_quarantined
    assert result.counts["quarantined"] == n_quarantined
    for table, n in _expected_rows_read(expect, base).items():
        read = quality["rows_read"][table]
        if n is not None:
            assert read == n, f"{table}: {read} rows read, expected {n}"
        dropped = sum(quality["quarantined"][table].values())
        assert quality["rows_kept"][table] == read - dropped, table
    if expect.scored_delta is not None:
        assert result.counts["scored"] == base.counts["scored"] + expect.scored_delta
    # The day's list is the new run's, one row per scored customer.
    assert set(rows["run_id"].to_list()) == {result.run_id}
    assert rows.height == result.counts["scored"] == run["n_scored"]


def _damage(case: Case, backend: str, settings: Settings, base: BaseWarehouse) -> dict[str, Any]:
    engine = engine_for(settings)
    try:
        with engine.begin() as conn:
            site = Site(
                conn=conn,
                backend=backend,
                wh=build_warehouse(settings),
                as_of=base.as_of,
                cutoff=snapshot_cutoff(base.as_of, settings.timezone),
                customers=base.scored_customers,
            )
            case.damage(site)
        return site.notes
    finally:
        engine.dispose()


@pytest.mark.parametrize(("case", "backend"), _params())
def test_bad_input_ends_in_a_clear_error_or_counted_quarantine(
    case: Case, backend: str, request: pytest.FixtureRequest, copy_base: CopyBase
) -> None:
    base: BaseWarehouse = request.getfixturevalue(f"{backend}_base")
    settings = copy_base(base, dict(case.settings))
    notes = _damage(case, backend, settings, base)

    result: RunResult | None = None
    error: BaseException | None = None
    try:
        result = score_day(settings, base.as_of)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a Rust panic is a BaseException; it must fail the case too
        error = exc

    engine = engine_for(settings)
    try:
        wh = build_warehouse(settings)
        run = _case_run(engine, wh, base)
        rows = _list_runs(engine, wh, base)
        if isinstance(case.expect, Fails):
            _assert_failed(case.expect, error, run, rows, base)
        else:
            _assert_succeeded(case.expect, error, result, run, rows, base)
        if case.check is not None:
            case.check(Ran(settings, engine, wh, base.as_of, notes, result))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_bytes_in_a_sql_ascii_database_name_table_column_and_rows(pg_server_url: str) -> None:
    """A SQL_ASCII database stores any bytes and hands them out unchecked: they are named.

    (A UTF8 database refuses such bytes on insert.) SQLAlchemy's psycopg dialect cannot
    connect to a SQL_ASCII database unless the client encoding is set, so this engine sets
    it; ADBC reads the raw bytes from the same URL.
    """
    url = create_pg_database(pg_server_url)
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE "{name}"'))
            conn.execute(
                sa.text(
                    f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'SQL_ASCII' "
                    "LC_COLLATE 'C' LC_CTYPE 'C'"
                )
            )
    finally:
        admin.dispose()
    settings = Settings(warehouse_url=url)  # type: ignore[arg-type]
    engine = sa.create_engine(url, connect_args={"client_encoding": "utf8"})
    try:
        wh = build_warehouse(settings)
        create_source_tables(engine, wh)
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO customers (customer_id, signup_at, segment) VALUES "
                "(1, '2026-01-01 00:00:00+00', E'caf\\xe9'), (2, '2026-01-01 00:00:00+00', 'smb')"
            )
        start = datetime(2025, 1, 1, tzinfo=UTC)
        with pytest.raises(ValueError, match="not valid UTF-8") as caught:
            extract(engine, wh, window_start=start, window_end=None)
        assert str(caught.value).startswith("customers.segment: 1 of 2 rows cannot be read")
    finally:
        engine.dispose()
        drop_pg_database(pg_server_url, url)
