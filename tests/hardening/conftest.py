"""Fixtures for the hardening tests: one trained demo warehouse per backend, copied per test.

The template (demo data, a champion model and one succeeded nightly run for ``AS_OF``, so
every copy has a *previous list*) is built once per session and backend; each test gets
its own copy to damage: a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on
PostgreSQL. PostgreSQL URLs carry a password (the test server trusts local connections
and ignores it), so every test also shows where a password could leak.
"""

from __future__ import annotations

import gc
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from flows.nightly import score_day
from flows.retrain import train_and_register
from flows.runtime import load_demo_warehouse
from tests.conftest import create_pg_database, drop_pg_database
from tests.hardening.helpers import JobPool, admin_engine
from warehouse.db import engine_for
from warehouse.outputs import read_retention_list
from warehouse.schema import Warehouse, build_warehouse
from warehouse.settings import Settings

AS_OF = date(2026, 3, 1)
CAPACITY = 50
CUSTOMERS = 1500
DAYS = 280
SEED = 5
N_SNAPSHOTS = 5
PASSWORD = f"hardening-Pw-{uuid.uuid4().hex[:10]}"
"""The password put into PostgreSQL URLs; it must never show up anywhere."""


def job_settings(url: str, root: Path, **overrides: Any) -> Settings:
    """The job's settings for the trained warehouse at ``url`` (small list, fast retries)."""
    values: dict[str, Any] = {
        "warehouse_url": url,
        "list_capacity": CAPACITY,
        "n_snapshots": N_SNAPSHOTS,
        "db_retries": 0,
        "db_retry_delay_seconds": 0.05,
        "artifacts_dir": root / "artifacts",
    }
    values.update(overrides)
    return Settings(**values)


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``RETENTION_*`` variables that give a separate process the same settings."""
    return {
        "RETENTION_WAREHOUSE_URL": settings.url,
        "RETENTION_LIST_CAPACITY": str(settings.list_capacity),
        "RETENTION_DB_RETRIES": str(settings.db_retries),
        "RETENTION_DB_RETRY_DELAY_SECONDS": str(settings.db_retry_delay_seconds),
        "RETENTION_ARTIFACTS_DIR": str(settings.artifacts_dir),
    }


@dataclass
class Template:
    """A trained warehouse that tests copy; ``previous_run_id`` wrote its list for AS_OF."""

    backend: str
    url: str
    previous_run_id: str


@dataclass
class TrainedWarehouse:
    """One test's own copy of the trained warehouse."""

    backend: str
    settings: Settings
    root: Path
    previous_run_id: str
    server_url: str | None = None

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def database(self) -> str:
        """The PostgreSQL database name, or the SQLite file path."""
        name = make_url(self.url).database
        assert name
        return name

    @property
    def wh(self) -> Warehouse:
        return build_warehouse(self.settings)

    def admin(self) -> sa.Engine:
        """Autocommit sessions on the server's maintenance database (PostgreSQL)."""
        assert self.server_url is not None
        return admin_engine(self.server_url)

    def settings_with(self, **overrides: Any) -> Settings:
        return self.settings.with_overrides(**overrides)

    def full_list(self, as_of: date = AS_OF) -> pl.DataFrame:
        """Every row written for ``as_of``, by customer."""
        engine = engine_for(self.settings)
        try:
            frame = read_retention_list(engine, self.wh, as_of=as_of, listed_only=False)
        finally:
            engine.dispose()
        return frame.sort("customer_id")

    def runs(self) -> list[dict[str, Any]]:
        """Every ``scoring_runs`` row, oldest first."""
        runs = self.wh["scoring_runs"]
        engine = engine_for(self.settings)
        try:
            with engine.connect() as conn:
                rows = conn.execute(sa.select(runs).order_by(runs.c.started_at)).mappings()
                return [dict(row) for row in rows]
        finally:
            engine.dispose()

    def run(self, run_id: str) -> dict[str, Any]:
        """One ``scoring_runs`` row."""
        found = [row for row in self.runs() if row["run_id"] == run_id]
        assert len(found) == 1, f"no run {run_id}"
        return found[0]

    def execute(self, *statements: str, params: dict[str, Any] | None = None) -> None:
        """Run statements as the warehouse administrator, in one transaction."""
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement), params or {})
        finally:
            engine.dispose()


def _build_template(url: str, root: Path) -> str:
    settings = job_settings(url, root)
    load_demo_warehouse(settings, customers=CUSTOMERS, days=DAYS, seed=SEED, end=AS_OF)
    training = train_and_register(settings, AS_OF, promote=True)
    assert training.promoted, training.decision
    result = score_day(settings, AS_OF)
    assert result.status == "succeeded"
    return result.run_id


def with_password(url: str) -> str:
    """``url`` with :data:`PASSWORD` unless it already has a password of its own."""
    parsed = make_url(url)
    if parsed.password:
        return url
    return parsed.set(password=PASSWORD).render_as_string(hide_password=False)


def secret_of(url: str) -> str:
    """The password in ``url``."""
    password = make_url(url).password
    assert password
    return str(password)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """The trained SQLite warehouse (built once per session)."""
    root = tmp_path_factory.mktemp("hardening-sqlite-template")
    url = f"sqlite:///{root / 'warehouse.db'}"
    return Template("sqlite", url, _build_template(url, root))


@pytest.fixture(scope="session")
def pg_template(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Template]:
    """The trained PostgreSQL warehouse (built once per session), in a template database."""
    root = tmp_path_factory.mktemp("hardening-pg-template")
    url = with_password(create_pg_database(pg_server_url))
    try:
        previous_run_id = _build_template(url, root)
        # Pools the build left behind would keep the template busy for CREATE DATABASE.
        gc.collect()
        admin = admin_engine(pg_server_url)
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :database AND pid <> pg_backend_pid()"
                ),
                {"database": make_url(url).database},
            )
        admin.dispose()
        yield Template("postgres", url, previous_run_id)
    finally:
        drop_pg_database(pg_server_url, url)


def _copy_pg(server_url: str, template_url: str) -> str:
    source = make_url(template_url).database
    name = f"rr_hard_{uuid.uuid4().hex[:12]}"
    admin = admin_engine(server_url)
    try:
        for attempt in range(50):
            try:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{source}"'))
                break
            except sa.exc.OperationalError as exc:
                # Another session (autovacuum, a test's leftover) still on the template.
                if "is being accessed by other users" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.1)
    finally:
        admin.dispose()
    return make_url(template_url).set(database=name).render_as_string(hide_password=False)


def _copy(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> Iterator[TrainedWarehouse]:
    if backend == "sqlite":
        template: Template = request.getfixturevalue("sqlite_template")
        source = make_url(template.url).database
        assert source
        target = tmp_path / "warehouse.db"
        shutil.copyfile(source, target)
        settings = job_settings(f"sqlite:///{target}", tmp_path)
        yield TrainedWarehouse("sqlite", settings, tmp_path, template.previous_run_id)
        return
    server: str = request.getfixturevalue("pg_server_url")
    template = request.getfixturevalue("pg_template")
    url = _copy_pg(server, template.url)
    try:
        settings = job_settings(url, tmp_path)
        yield TrainedWarehouse("postgres", settings, tmp_path, template.previous_run_id, server)
    finally:
        drop_pg_database(server, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def trained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrainedWarehouse]:
    """A copy of the trained warehouse, on each backend in turn."""
    yield from _copy(request, request.param, tmp_path)


@pytest.fixture
def pg_trained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrainedWarehouse]:
    """A copy of the trained PostgreSQL warehouse (mark the test ``postgres``)."""
    yield from _copy(request, "postgres", tmp_path)


@pytest.fixture
def sqlite_trained(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TrainedWarehouse]:
    """A copy of the trained SQLite warehouse."""
    yield from _copy(request, "sqlite", tmp_path)


@pytest.fixture(scope="session")
def job_pool() -> Iterator[JobPool]:
    """Nightly job processes started ahead of time; see :class:`JobPool`."""
    pool = JobPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect API with the flow heartbeat thread off, shared by the suite.

    When the suite's harness (``tests/flows``) is already running this reuses it rather
    than starting a second server; ``prefect_test_harness`` is recognised by its
    temporary database, ``prefect-test.db``.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    database = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    if PREFECT_API_URL.value() and database.endswith("prefect-test.db"):
        yield
        return
    with (
        prefect_test_harness(server_startup_timeout=90),
        temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        yield
