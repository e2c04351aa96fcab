"""Shared fixtures: real SQLite files and a real PostgreSQL server, no mocks.

PostgreSQL tests are marked ``postgres`` and use the server at
``RETENTION_TEST_POSTGRES_URL`` (default: postgres@127.0.0.1:5432/test). Each test
gets a database of its own, created and dropped here. When the server cannot be
reached they are skipped with the reason, unless ``RETENTION_REQUIRE_POSTGRES=1``
(CI), where that is an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from warehouse.settings import Settings

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pytest_configure(config: pytest.Config) -> None:
    # LightGBM's OpenMP threads spin while waiting by default, which on a busy 2-core machine
    # makes training many times slower; PASSIVE must be set before lightgbm is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Prefect must never touch the user's profile or phone home from the test suite.
    if "PREFECT_HOME" not in os.environ:
        home = tempfile.mkdtemp(prefix="retention-prefect-")
        os.environ["PREFECT_HOME"] = home
        config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_API_URL", "")
    if os.environ.get("PREFECT_API_URL") == "":
        del os.environ["PREFECT_API_URL"]
    # Settings read RETENTION_* from the environment; tests build their own.
    for key in list(os.environ):
        keep = key.startswith("RETENTION_TEST") or key == "RETENTION_REQUIRE_POSTGRES"
        if key.startswith("RETENTION_") and not keep:
            del os.environ[key]


def _require_postgres() -> bool:
    return os.environ.get("RETENTION_REQUIRE_POSTGRES", "") not in ("", "0", "false")


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """URL of a reachable PostgreSQL server's maintenance database, or skip (fail in CI)."""
    url = os.environ.get("RETENTION_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:
        reason = f"PostgreSQL not reachable at {sa.engine.make_url(url).render_as_string()}: {exc}"
        if _require_postgres():
            pytest.fail(f"RETENTION_REQUIRE_POSTGRES is set but {reason}")
        pytest.skip(reason)
    return url


def create_pg_database(server_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    name = f"rr_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(server_url: str, url: str) -> None:
    name = sa.engine.make_url(url).database
    engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    url = create_pg_database(pg_server_url)
    try:
        yield url
    finally:
        drop_pg_database(pg_server_url, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite file for one test."""
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty warehouse on each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    server = request.getfixturevalue("pg_server_url")
    url = create_pg_database(server)
    try:
        yield url
    finally:
        drop_pg_database(server, url)


@pytest.fixture
def make_settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build Settings for a warehouse URL with test-friendly defaults."""

    def _make(url: str, **overrides: object) -> Settings:
        overrides.setdefault("artifacts_dir", tmp_path / "artifacts")
        return Settings(warehouse_url=url, **overrides)  # type: ignore[arg-type]

    return _make
