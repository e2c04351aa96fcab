"""Fixtures for the warehouse tests: settings, an engine and the bound contract per backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import create_pg_database, drop_pg_database
from warehouse.db import engine_for
from warehouse.migrate import create_source_tables
from warehouse.schema import Warehouse, build_warehouse
from warehouse.settings import Settings


@pytest.fixture
def settings(warehouse_url: str, make_settings: Callable[..., Settings]) -> Settings:
    """Default settings pointing at an empty warehouse on each backend."""
    return make_settings(warehouse_url)


@pytest.fixture
def engine(settings: Settings) -> Iterator[sa.Engine]:
    """An engine for ``settings``, disposed after the test."""
    engine = engine_for(settings)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def wh(settings: Settings) -> Warehouse:
    """The contract bound to the default table names."""
    return build_warehouse(settings)


@pytest.fixture
def sources(engine: sa.Engine, wh: Warehouse) -> Warehouse:
    """The contract with its five source tables created and empty."""
    create_source_tables(engine, wh)
    return wh


@pytest.fixture(scope="module")
def pg_module_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database shared by one test module (tests isolate by schema)."""
    url = create_pg_database(pg_server_url)
    try:
        yield url
    finally:
        drop_pg_database(pg_server_url, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def make_isolated_settings(
    request: pytest.FixtureRequest, tmp_path: Path, make_settings: Callable[..., Settings]
) -> Callable[..., Settings]:
    """Build settings for a warehouse of the test's own on each backend.

    SQLite: a fresh file. PostgreSQL: a fresh schema (used for sources and outputs) in a
    database the module shares, which is much faster than a database per test.
    """
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.db'}"

        def _sqlite(**overrides: object) -> Settings:
            return make_settings(url, **overrides)

        return _sqlite
    url = request.getfixturevalue("pg_module_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"

    def _postgres(**overrides: object) -> Settings:
        overrides.setdefault("source_schema", schema)
        overrides.setdefault("output_schema", schema)
        return make_settings(url, **overrides)

    return _postgres


@pytest.fixture
def isolated_engine(make_isolated_settings: Callable[..., Settings]) -> Iterator[sa.Engine]:
    """An engine on the test's own warehouse, disposed after the test."""
    engine = engine_for(make_isolated_settings())
    try:
        yield engine
    finally:
        engine.dispose()
