"""One small trained warehouse per backend, and cheap copies of it for each bad-input case.

The base is a demo warehouse (1,500 customers, 280 days ending today, a champion trained
on 5 snapshots) that has been scored once for today, so every case starts with a
"previous list" that a failed run must leave untouched. Each case damages a copy:

- SQLite: a copy of the database file (milliseconds).
- PostgreSQL: ``CREATE DATABASE case TEMPLATE base`` (about 0.15 s here, against about
  8 s to load the demo frames into a fresh database and train again). A copy is dropped
  in the background while the next case runs, which keeps its drop (up to a second after
  a case that wrote a million rows) out of the cases' time.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from flows.nightly import score_day
from flows.retrain import train_and_register
from flows.runtime import today_in
from models.registry import promote
from tests.conftest import create_pg_database, drop_pg_database
from warehouse.db import engine_for
from warehouse.demo import generate_demo, load_demo
from warehouse.migrate import init_db
from warehouse.outputs import latest_runs, read_retention_list
from warehouse.schema import build_warehouse
from warehouse.settings import Settings

BASE_CUSTOMERS = 1_500
BASE_DAYS = 280
BASE_SEED = 3
BASE_SNAPSHOTS = 5


@dataclass(frozen=True)
class BaseWarehouse:
    """A trained, scored warehouse that cases copy; what its own run found."""

    backend: str
    settings: Settings
    as_of: date
    run_id: str
    quality: dict[str, Any]
    counts: dict[str, int]
    scored_customers: tuple[int, ...]
    """Customers scored and not cooled down in the base run, by id."""


def _build_base(backend: str, url: str, root: Path) -> BaseWarehouse:
    settings = Settings(
        warehouse_url=url,  # type: ignore[arg-type]
        n_snapshots=BASE_SNAPSHOTS,
        artifacts_dir=root / "artifacts",
    )
    as_of = today_in(settings.timezone)
    engine = engine_for(settings)
    wh = build_warehouse(settings)
    try:
        frames = generate_demo(
            n_customers=BASE_CUSTOMERS, days=BASE_DAYS, seed=BASE_SEED, end=as_of
        )
        load_demo(engine, wh, frames)
        init_db(engine, wh)
        training = train_and_register(settings, as_of, promote=True)
        if not training.promoted:
            # The catalog needs a champion, not a good one: promote whatever was trained.
            promote(engine, wh, training.version)
        result = score_day(settings, as_of)
        runs = latest_runs(engine, wh).filter(pl.col("run_id") == result.run_id)
        listed = read_retention_list(engine, wh, as_of=as_of, listed_only=False)
    finally:
        engine.dispose()
    quality = _json(runs["data_quality"][0])
    # Cases expect exact counts of their own damage: the base itself must be clean.
    assert quality["n_quarantined"] == 0 and quality["n_normalised"] == 0, quality
    scored = listed.filter(~pl.col("cooled_down")).sort("customer_id")["customer_id"]
    assert scored.len() >= 4, "the cases need four scored customers to damage"
    return BaseWarehouse(
        backend=backend,
        settings=settings,
        as_of=as_of,
        run_id=result.run_id,
        quality=quality,
        counts=dict(result.counts),
        scored_customers=tuple(int(c) for c in scored),
    )


def _json(text: str | None) -> dict[str, Any]:
    return {} if text is None else dict(json.loads(text))


@pytest.fixture(scope="session")
def sqlite_base(tmp_path_factory: pytest.TempPathFactory) -> BaseWarehouse:
    """The base warehouse in a SQLite file."""
    root = tmp_path_factory.mktemp("badinput-sqlite-base")
    return _build_base("sqlite", f"sqlite:///{root / 'base.db'}", root)


@pytest.fixture(scope="session")
def postgres_base(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BaseWarehouse]:
    """The base warehouse in a PostgreSQL database of its own."""
    root = tmp_path_factory.mktemp("badinput-postgres-base")
    url = create_pg_database(pg_server_url)
    try:
        yield _build_base("postgres", url, root)
    finally:
        drop_pg_database(pg_server_url, url)


@pytest.fixture(scope="session")
def postgres_dropper(pg_server_url: str) -> Iterator[Callable[[str], None]]:
    """Drops PostgreSQL copies on a background thread; waits for every drop at the end."""
    drops: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="badinput-drop") as pool:

        def drop(url: str) -> None:
            drops.append(pool.submit(drop_pg_database, pg_server_url, url))

        yield drop
    for done in drops:
        done.result()


def _copy_postgres(server_url: str, base_url: str) -> str:
    base = sa.engine.make_url(base_url).database
    name = f"rr_badinput_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{base}"'))
    finally:
        admin.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


CopyBase = Callable[[BaseWarehouse, dict[str, Any]], Settings]


@pytest.fixture
def copy_base(request: pytest.FixtureRequest, tmp_path: Path) -> CopyBase:
    """A function that copies a base warehouse and returns settings for the copy."""

    def _copy(base: BaseWarehouse, overrides: dict[str, Any]) -> Settings:
        if base.backend == "sqlite":
            source = sa.engine.make_url(base.settings.url).database
            assert source is not None
            target = tmp_path / "case.db"
            shutil.copyfile(source, target)
            url = f"sqlite:///{target}"
        else:
            server = request.getfixturevalue("pg_server_url")
            drop = request.getfixturevalue("postgres_dropper")
            url = _copy_postgres(server, base.settings.url)
            request.addfinalizer(lambda: drop(url))
        return base.settings.with_overrides(
            warehouse_url=url, artifacts_dir=tmp_path / "artifacts", **overrides
        )

    return _copy
