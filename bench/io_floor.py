"""The I/O floor of the nightly job: only read the rows it needs, only write the rows it writes.

    python -m bench.io_floor --url postgresql://... --as-of 2026-11-01 [--json-out FILE]

Reading runs the job's own SELECTs (:func:`warehouse.extract.source_query`: the contract
columns, the scoring window pushed into SQL) through ADBC into Arrow tables, with no
conversion at all. Writing appends the day's ``retention_list`` rows (read back from the
warehouse beforehand, untimed) into a scratch copy of the table through ADBC bulk ingest, the
fastest write path on both backends. The scratch table is dropped afterwards. The reads are
timed one table after another and, as the job reads, two tables at a time; the faster way
is the floor. Every read and the write run twice and the faster time counts.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import sqlalchemy as sa

SCRATCH_TABLE = "bench_io_floor_list"


def measure_io_floor(url: str, as_of: date, *, repeats: int = 2) -> dict[str, Any]:
    """Seconds to read the job's source rows and to write its output rows (fastest paths).

    Reading is timed two ways: one table after another on one connection, and
    :data:`~warehouse.extract.READ_WORKERS` tables at a time on connections of their own,
    largest first, as the job reads. The faster of the two is the floor's read time. Each
    read and the write run ``repeats`` times and the fastest time counts: a floor is a lower
    bound, and on a shared machine the slower repeats measure other people's load.
    """
    import pyarrow as pa
    from pydantic import SecretStr

    from models.nightly import scoring_window
    from warehouse.db import engine_for_url
    from warehouse.extract import READ_WORKERS, SOURCE_READ_ORDER, source_query
    from warehouse.io import SQLITE_ADBC_BATCH_ROWS, _compile_positional, adbc_connection
    from warehouse.schema import SOURCE_TABLES, build_warehouse
    from warehouse.settings import Settings

    settings = Settings(warehouse_url=SecretStr(url))
    engine = engine_for_url(url)
    wh = build_warehouse(settings)
    backend = engine.dialect.name
    window = scoring_window(settings, as_of)
    queries: dict[str, tuple[str, Any]] = {}
    for logical in SOURCE_TABLES:
        query, _exact = source_query(
            wh, logical, window_start=window.start, window_end=window.end, dialect=backend
        )
        queries[logical] = _compile_positional(query, backend)

    def fetch(conn: Any, logical: str) -> int:
        """Read one table's rows as Arrow, without any conversion; the row count."""
        sql, params = queries[logical]
        with conn.cursor() as cursor:
            if backend == "sqlite":
                cursor.adbc_statement.set_options(
                    **{"adbc.sqlite.query.batch_rows": str(SQLITE_ADBC_BATCH_ROWS)}
                )
            cursor.execute(sql, params or None)
            rows = int(cursor.fetch_arrow_table().num_rows)
        conn.rollback()
        return rows

    def fetch_alone(logical: str) -> int:
        with adbc_connection(engine) as conn:
            return fetch(conn, logical)

    read_rows: dict[str, int] = {}
    read_seconds: dict[str, float] = {}
    concurrent_seconds = float("inf")
    try:
        with adbc_connection(engine) as conn:
            for logical in SOURCE_TABLES:
                for _ in range(repeats):
                    started = time.perf_counter()
                    read_rows[logical] = fetch(conn, logical)
                    seconds = time.perf_counter() - started
                    read_seconds[logical] = min(seconds, read_seconds.get(logical, seconds))
        for _ in range(repeats):
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
                rows = pool.map(fetch_alone, SOURCE_READ_ORDER)
                counts = dict(zip(SOURCE_READ_ORDER, rows, strict=True))
            concurrent_seconds = min(concurrent_seconds, time.perf_counter() - started)
            if counts != read_rows:
                raise RuntimeError(f"concurrent reads gave {counts}, one by one {read_rows}")

        with adbc_connection(engine) as conn:
            target = wh["retention_list"]
            with conn.cursor() as cursor:
                sql, params = _compile_positional(
                    sa.select(*target.c).where(target.c.as_of == as_of), backend
                )
                cursor.execute(sql, params or None)
                output: pa.Table = cursor.fetch_arrow_table()
            conn.rollback()
        write_seconds = float("inf")
        written: int | None = None
        for _ in range(repeats):
            with engine.begin() as sa_conn:
                sa_conn.exec_driver_sql(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
                if backend == "postgresql":
                    sa_conn.exec_driver_sql(
                        f"CREATE TABLE {SCRATCH_TABLE} (LIKE {target.fullname} INCLUDING ALL)"
                    )
                else:
                    scratch = target.to_metadata(sa.MetaData(), name=SCRATCH_TABLE)
                    scratch.create(sa_conn)
            with adbc_connection(engine) as conn:
                started = time.perf_counter()
                with conn.cursor() as cursor:
                    written = cursor.adbc_ingest(SCRATCH_TABLE, output, mode="append")
                conn.commit()
                write_seconds = min(write_seconds, time.perf_counter() - started)
        with engine.begin() as sa_conn:
            sa_conn.exec_driver_sql(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
    finally:
        engine.dispose()
    sequential_read = sum(read_seconds.values())
    total_read = min(sequential_read, concurrent_seconds)
    n_read = sum(read_rows.values())
    return {
        "path": "adbc",
        "repeats": repeats,
        "read_seconds": round(total_read, 4),
        "read_seconds_sequential": round(sequential_read, 4),
        "read_seconds_concurrent": round(concurrent_seconds, 4),
        "read_workers": READ_WORKERS,
        "read_rows": read_rows,
        "read_rows_per_s": round(n_read / total_read) if total_read > 0 else None,
        "read_seconds_by_table": {k: round(v, 4) for k, v in read_seconds.items()},
        "write_seconds": round(write_seconds, 4),
        "write_rows": output.num_rows if written is None or written < 0 else int(written),
        "total_seconds": round(total_read + write_seconds, 4),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure the I/O floor and print (or write) it as JSON."""
    from bench.harness import child_main

    child_main(argv, prog="python -m bench.io_floor", description=__doc__, measure=measure_io_floor)


if __name__ == "__main__":
    main()
