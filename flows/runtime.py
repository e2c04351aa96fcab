"""Small pieces the flows and the CLI share: today's date, demo set-up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from warehouse.settings import Settings

DEMO_DAYS = 455
"""Days of demo history: 12 monthly training snapshots with a full 90-day lookback need
horizon + 11 * spacing + lookback = 30 + 330 + 90 = 450 days; 5 more spare."""
DEMO_SEED = 7


def today_in(timezone: str, now: datetime | None = None) -> date:
    """The calendar date in ``timezone`` at ``now`` (default: the current instant)."""
    instant = now or datetime.now(ZoneInfo("UTC"))
    return instant.astimezone(ZoneInfo(timezone)).date()


def load_demo_warehouse(
    settings: Settings, *, customers: int, days: int, seed: int, end: date
) -> dict[str, Any]:
    """Generate demo source tables into the configured warehouse; return its summary."""
    from warehouse.db import check_connection, engine_for
    from warehouse.demo import generate_demo, load_demo, warehouse_summary
    from warehouse.migrate import init_db
    from warehouse.schema import build_warehouse

    engine = engine_for(settings)
    check_connection(engine)
    wh = build_warehouse(settings)
    frames = generate_demo(n_customers=customers, days=days, seed=seed, end=end)
    load_demo(engine, wh, frames)
    init_db(engine, wh)
    return warehouse_summary(engine, wh)


def _source_rows(engine: sa.Engine, table: sa.Table) -> int | None:
    """Rows in a source table, or None when the table does not exist."""
    if not sa.inspect(engine).has_table(table.name, schema=table.schema):
        return None
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def prepare_demo(settings: Settings, *, customers: int) -> Iterator[str]:
    """Make the warehouse ready for a first nightly run, yielding what was done.

    Demo data is generated only when the source tables are missing or empty, and a model is
    trained only when there is no champion: running it again just scores.
    """
    from models.registry import NoChampionError, load_model
    from warehouse.db import check_connection, engine_for
    from warehouse.migrate import init_db
    from warehouse.schema import build_warehouse

    engine = engine_for(settings)
    check_connection(engine)
    wh = build_warehouse(settings)
    rows = _source_rows(engine, wh["customers"])
    if not rows:
        end = today_in(settings.timezone)
        yield (
            f"warehouse {settings.display_url} is empty: generating {customers:,} demo customers "
            f"with {DEMO_DAYS} days of history"
        )
        summary = load_demo_warehouse(
            settings, customers=customers, days=DEMO_DAYS, seed=DEMO_SEED, end=end
        )
        counts = summary.get("rows", {})
        if isinstance(counts, dict):
            yield "  " + ", ".join(f"{k} {v:,}" for k, v in counts.items())
    init_db(engine, wh)
    try:
        load_model(engine, wh)
        yield "champion model found"
    except NoChampionError:
        yield "no champion model yet: training one on monthly point-in-time snapshots"
        from flows.retrain import retrain

        result = retrain(settings=settings, promote=True)
        yield f"model {result.version}: {result.decision}"
