"""Aggregating activity in PostgreSQL against reading its rows, measured side by side.

    python -m bench.pushdown --url postgresql://... --as-of 2026-11-01 [--json-out FILE]

The nightly job reads the activity rows of its window (about 8.8M at the L tier) and
aggregates them per customer in Polars. The alternative is to let the warehouse do it: one
``GROUP BY customer_id`` returning, per customer with activity, the same aggregates the
activity features are built from (events in the last 7, 30 and 90 days and in the 60 days
before the last 30, the last activity instant in the lookback, and per model event type its
events in the last 30 and 90 days and its value in the last 90), about one row per customer.

Both are fetched through ADBC into Arrow with no conversion, on connections of their own, and
each is run ``repeats`` times (the fastest time counts); the warehouse's own share of each
(``COPY (query) TO '/dev/null'``, no transfer) is timed the same way. Reading the rows is
what the job does before its own aggregation; the aggregate query would replace both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa

from features.build import FeatureConfig, snapshot_cutoff
from features.registry import WINDOWS
from warehouse.schema import Warehouse

PRIOR_WINDOW = (90, 30)
"""The days before the snapshot of ``_activity_events_prior_60d`` (the trend's baseline)."""


def activity_aggregate_query(
    wh: Warehouse,
    *,
    as_of: date,
    timezone: str,
    lookback_days: int,
    event_types: Sequence[str],
) -> sa.Select[Any]:
    """Per customer with activity in the lookback before ``as_of``: the activity aggregates.

    Columns: ``customer_id``; ``events_<d>d`` for each feature window; ``events_prior_60d``;
    ``last_activity_at``; and per event type ``i`` (its position in ``event_types``)
    ``type<i>_events_30d``, ``type<i>_events_90d`` and ``type<i>_value_90d``. Windows end at
    the snapshot instant and start at the local midnights ``d`` days before, as the features'
    windows do; every instant is a bound parameter.
    """
    activity = wh["activity"]
    occurred = activity.c.occurred_at

    def cutoff(days: int) -> datetime:
        return snapshot_cutoff(as_of - timedelta(days=days), timezone)

    def since(days: int) -> sa.ColumnElement[bool]:
        return occurred >= cutoff(days)

    columns: list[sa.ColumnElement[Any]] = [activity.c.customer_id]
    for days in WINDOWS:
        columns.append(sa.func.count().filter(since(days)).label(f"events_{days}d"))
    start, end = PRIOR_WINDOW
    columns.append(
        sa.func.count()
        .filter(since(start) & (occurred < cutoff(end)))
        .label(f"events_prior_{start - end}d")
    )
    columns.append(sa.func.max(occurred).label("last_activity_at"))
    for index, event_type in enumerate(event_types):
        of_type = activity.c.event_type == event_type
        for days in (30, 90):
            columns.append(
                sa.func.count().filter(of_type & since(days)).label(f"type{index}_events_{days}d")
            )
        columns.append(
            sa.func.coalesce(sa.func.sum(activity.c.value).filter(of_type & since(90)), 0.0).label(
                f"type{index}_value_90d"
            )
        )
    return (
        sa.select(*columns)
        .where(since(lookback_days), occurred < cutoff(0))
        .group_by(activity.c.customer_id)
    )


def _fastest(repeats: int, run: Callable[[], int]) -> tuple[float, int]:
    """The fastest of ``repeats`` runs of ``run`` (seconds) and the row count it returned."""
    best = float("inf")
    rows = 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = run()
        best = min(best, time.perf_counter() - started)
    return best, rows


def measure_pushdown(
    url: str, as_of: date, *, repeats: int = 2, event_types: Sequence[str] | None = None
) -> dict[str, Any]:
    """Seconds to fetch the job's activity rows and to fetch the warehouse's aggregate of them.

    ``event_types`` default to the champion's (the most frequent types when there is none).
    Raises ``ValueError`` for a warehouse that is not PostgreSQL.
    """
    from pydantic import SecretStr

    from bench.harness import machine_info
    from models.nightly import scoring_window
    from models.registry import champion_version, load_model
    from warehouse.db import engine_for_url
    from warehouse.extract import source_query
    from warehouse.io import _compile_positional, adbc_connection
    from warehouse.schema import build_warehouse
    from warehouse.settings import Settings

    settings = Settings(warehouse_url=SecretStr(url))
    engine = engine_for_url(url)
    try:
        if engine.dialect.name != "postgresql":
            raise ValueError(
                f"the pushdown comparison runs on PostgreSQL; this warehouse is "
                f"{engine.dialect.name}"
            )
        wh = build_warehouse(settings)
        config = FeatureConfig.from_settings(settings)
        if event_types is None:
            registry = wh["model_registry"]
            has_registry = sa.inspect(engine).has_table(registry.name, schema=registry.schema)
            if has_registry and champion_version(engine, wh) is not None:
                event_types = load_model(engine, wh).event_types
            else:
                activity = wh["activity"]
                with engine.connect() as conn:
                    event_types = list(
                        conn.scalars(
                            sa.select(activity.c.event_type)
                            .group_by(activity.c.event_type)
                            .order_by(sa.func.count().desc(), activity.c.event_type)
                            .limit(config.max_event_types)
                        )
                    )
        window = scoring_window(settings, as_of)
        rows_query, _exact = source_query(
            wh, "activity", window_start=window.start, window_end=window.end, dialect="postgresql"
        )
        aggregate_query = activity_aggregate_query(
            wh,
            as_of=as_of,
            timezone=settings.timezone,
            lookback_days=config.lookback_days,
            event_types=event_types,
        )
        queries: dict[str, sa.Select[Any] | sa.CompoundSelect[Any]] = {
            "rows": rows_query,
            "aggregate": aggregate_query,
        }

        def fetch(query: sa.Select[Any] | sa.CompoundSelect[Any]) -> int:
            sql, params = _compile_positional(query, "postgresql")
            with adbc_connection(engine) as conn, conn.cursor() as cursor:
                cursor.execute(sql, params or None)
                return int(cursor.fetch_arrow_table().num_rows)

        def server_only(query: sa.Select[Any] | sa.CompoundSelect[Any]) -> int:
            # COPY takes no parameters: SQLAlchemy renders the values (instants, type names).
            text = query.compile(engine, compile_kwargs={"literal_binds": True})
            with engine.connect() as conn:
                result = conn.exec_driver_sql(f"COPY ({text}) TO '/dev/null' (FORMAT binary)")
                return int(result.rowcount)

        machine = machine_info(engine)
        measured: dict[str, Any] = {}
        for name, query in queries.items():
            seconds, rows = _fastest(repeats, partial(fetch, query))
            server_seconds, server_rows = _fastest(repeats, partial(server_only, query))
            if server_rows != rows:
                raise RuntimeError(f"{name}: COPY gave {server_rows} rows, the fetch {rows}")
            measured[name] = {
                "seconds": round(seconds, 4),
                "server_seconds": round(server_seconds, 4),
                "rows": rows,
            }
    finally:
        engine.dispose()
    return {
        "as_of": as_of.isoformat(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "repeats": repeats,
        "event_types": list(event_types),
        "read_rows": measured["rows"],
        "aggregate_in_warehouse": measured["aggregate"],
        "aggregate_over_rows": round(
            measured["aggregate"]["seconds"] / measured["rows"]["seconds"], 2
        ),
    }


def main(argv: list[str] | None = None) -> None:
    """Measure both and print (or write) the result as JSON."""
    from bench.harness import child_main

    child_main(argv, prog="python -m bench.pushdown", description=__doc__, measure=measure_pushdown)


if __name__ == "__main__":
    main()
