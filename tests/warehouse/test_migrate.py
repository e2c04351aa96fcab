"""init-db and the source-table helper on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from warehouse.db import engine_for
from warehouse.migrate import (
    SchemaVersionError,
    create_source_indexes,
    create_source_tables,
    current_version,
    init_db,
)
from warehouse.schema import (
    OUTPUT_TABLES,
    SCHEMA_VERSION,
    SOURCE_TABLES,
    Warehouse,
    build_warehouse,
)
from warehouse.settings import Settings


def _tables(engine: sa.Engine, schema: str | None = None) -> set[str]:
    return set(sa.inspect(engine).get_table_names(schema=schema))


def test_init_db_twice_is_idempotent_and_records_the_version(
    engine: sa.Engine, wh: Warehouse
) -> None:
    assert current_version(engine, wh) is None
    before = datetime.now(UTC)
    assert init_db(engine, wh) == SCHEMA_VERSION
    assert init_db(engine, wh) == SCHEMA_VERSION
    assert current_version(engine, wh) == SCHEMA_VERSION
    assert _tables(engine) == {*OUTPUT_TABLES, "retention_schema_version"}
    table = wh["schema_version"]
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.version, table.c.applied_at)).all()
    assert len(rows) == 1
    version, applied_at = rows[0]
    assert version == SCHEMA_VERSION
    applied = applied_at if applied_at.tzinfo else applied_at.replace(tzinfo=UTC)
    assert abs(applied - before) < timedelta(minutes=5)


def test_newer_warehouse_version_is_refused(engine: sa.Engine, wh: Warehouse) -> None:
    init_db(engine, wh)
    table = wh["schema_version"]
    with engine.begin() as conn:
        conn.execute(
            table.insert().values(version=SCHEMA_VERSION + 1, applied_at=datetime.now(UTC))
        )
    with pytest.raises(SchemaVersionError, match=rf"schema version {SCHEMA_VERSION + 1}, newer"):
        init_db(engine, wh)
    assert current_version(engine, wh) == SCHEMA_VERSION + 1


def test_older_version_without_a_migration_is_refused(engine: sa.Engine, wh: Warehouse) -> None:
    table = wh["schema_version"]
    wh.metadata.create_all(engine, tables=[table])
    with engine.begin() as conn:
        conn.execute(table.insert().values(version=0, applied_at=datetime.now(UTC)))
    with pytest.raises(SchemaVersionError, match="no migration from version 0"):
        init_db(engine, wh)
    assert current_version(engine, wh) == 0
    assert _tables(engine) == {"retention_schema_version"}


def _version_1_layout(engine: sa.Engine, wh: Warehouse) -> None:
    """The output tables as release 1 created them: scoring_runs without pid_scope."""
    metadata = sa.MetaData()
    for table in wh.outputs:
        if table is not wh["scoring_runs"]:
            table.to_metadata(metadata)
    declared = wh["scoring_runs"]
    runs = sa.Table(
        declared.name,
        metadata,
        *[
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in declared.columns
            if c.name != "pid_scope"
        ],
        schema=declared.schema,
    )
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            metadata.tables[wh["schema_version"].key]
            .insert()
            .values(version=1, applied_at=datetime.now(UTC))
        )
        conn.execute(
            runs.insert().values(
                run_id="r-1",
                kind="nightly",
                status="succeeded",
                started_at=datetime(2026, 11, 1, 2, tzinfo=UTC),
                host="host-a",
                pid=4242,
                n_scored=10,
            )
        )


def test_version_1_is_migrated_in_place_keeping_its_runs(engine: sa.Engine, wh: Warehouse) -> None:
    _version_1_layout(engine, wh)
    runs = wh["scoring_runs"]
    assert "pid_scope" not in {c["name"] for c in sa.inspect(engine).get_columns(runs.name)}

    assert init_db(engine, wh) == SCHEMA_VERSION == 2
    assert init_db(engine, wh) == SCHEMA_VERSION

    assert "pid_scope" in {c["name"] for c in sa.inspect(engine).get_columns(runs.name)}
    table = wh["schema_version"]
    with engine.connect() as conn:
        versions = conn.execute(sa.select(table.c.version).order_by(table.c.version)).scalars()
        assert versions.all() == [1, 2]
        old = conn.execute(sa.select(runs).where(runs.c.run_id == "r-1")).mappings().one()
    kept = (old["host"], old["pid"], old["pid_scope"], old["n_scored"])
    assert kept == ("host-a", 4242, None, 10)


def test_migration_creates_a_missing_output_table_whole(engine: sa.Engine, wh: Warehouse) -> None:
    _version_1_layout(engine, wh)
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {wh['scoring_runs'].name}"))
    assert init_db(engine, wh) == SCHEMA_VERSION
    names = {c["name"] for c in sa.inspect(engine).get_columns(wh["scoring_runs"].name)}
    assert names == {c.name for c in wh["scoring_runs"].columns}


def test_create_source_tables_is_idempotent(engine: sa.Engine, wh: Warehouse) -> None:
    create_source_tables(engine, wh)
    create_source_tables(engine, wh)
    assert _tables(engine) == set(SOURCE_TABLES)


def test_configured_names_on_sqlite(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        sqlite_url, tables={"interactions": "crm_contacts", "schema_version": "rr_version"}
    )
    wh = build_warehouse(settings)
    engine = engine_for(settings)
    create_source_tables(engine, wh)
    init_db(engine, wh)
    assert {"crm_contacts", "rr_version"} <= _tables(engine)
    assert "interactions" not in _tables(engine)
    assert current_version(engine, wh) == SCHEMA_VERSION
    engine.dispose()


@pytest.mark.postgres
def test_configured_schemas_are_created_on_postgres(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        pg_url,
        source_schema="crm",
        output_schema="retention",
        tables={"retention_list": "daily_list"},
    )
    wh = build_warehouse(settings)
    engine = engine_for(settings)
    create_source_tables(engine, wh)
    assert init_db(engine, wh) == SCHEMA_VERSION
    assert init_db(engine, wh) == SCHEMA_VERSION
    assert _tables(engine, "crm") == set(SOURCE_TABLES)
    assert _tables(engine, "retention") == {
        "daily_list",
        "scoring_runs",
        "model_registry",
        "retention_schema_version",
    }
    assert _tables(engine) == set()
    assert current_version(engine, wh) == SCHEMA_VERSION
    engine.dispose()


def test_source_tables_without_indexes_then_indexes(engine: sa.Engine, wh: Warehouse) -> None:
    create_source_tables(engine, wh, indexes=False)
    inspector = sa.inspect(engine)
    assert _tables(engine) == set(SOURCE_TABLES)
    assert inspector.get_indexes("interactions") == []
    create_source_indexes(engine, wh)
    create_source_indexes(engine, wh)
    indexed = {tuple(ix["column_names"]) for ix in sa.inspect(engine).get_indexes("interactions")}
    assert indexed == {("customer_id",), ("opened_at",)}
