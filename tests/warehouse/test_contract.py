"""The contract check against real SQLite files and real PostgreSQL schemas."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from warehouse.contract import ContractError, check_contract, check_outputs
from warehouse.migrate import create_source_tables, init_db
from warehouse.schema import (
    OUTPUT_TABLES,
    SCHEMA_VERSION,
    SOURCE_TABLES,
    Warehouse,
    build_warehouse,
    required_columns,
)
from warehouse.settings import Settings

_DEFAULT = build_warehouse(Settings())
SOURCE_COLUMNS = [
    pytest.param(logical, column, id=f"{logical}.{column}")
    for logical in SOURCE_TABLES
    for column in required_columns(_DEFAULT[logical])
]


def _create_without(
    engine: sa.Engine, wh: Warehouse, logical: str, column: str | None = None
) -> None:
    """Create every source table but ``logical``, or ``logical`` without ``column``."""
    create_source_tables(engine, wh)
    table = wh[logical]
    with engine.begin() as conn:
        conn.execute(sa.schema.DropTable(table))
        if column is None:
            return
        stripped = sa.Table(
            table.name,
            sa.MetaData(),
            *(sa.Column(c.name, c.type) for c in table.columns if c.name != column),
            schema=table.schema,
        )
        stripped.create(conn)


def _qualified(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def _contract_error(engine: sa.Engine, wh: Warehouse) -> ContractError:
    with pytest.raises(ContractError) as caught:
        check_contract(engine, wh)
    return caught.value


def test_complete_contract_passes_with_extra_columns(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    create_source_tables(isolated_engine, wh)
    table = wh["interactions"]
    preparer = isolated_engine.dialect.identifier_preparer
    with isolated_engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN agent TEXT"))
    check_contract(isolated_engine, wh)


@pytest.mark.parametrize("logical", SOURCE_TABLES)
def test_each_missing_table_is_named(
    logical: str, make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    wh = build_warehouse(make_isolated_settings())
    _create_without(isolated_engine, wh, logical)
    error = _contract_error(isolated_engine, wh)
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.startswith(f"missing table '{_qualified(wh[logical])}' ")
    assert f"contract table '{logical}'" in problem
    assert ", ".join(required_columns(wh[logical])) in problem
    assert problem in str(error)


@pytest.mark.parametrize(("logical", "column"), SOURCE_COLUMNS)
def test_each_missing_column_is_named(
    logical: str,
    column: str,
    make_isolated_settings: Callable[..., Settings],
    isolated_engine: sa.Engine,
) -> None:
    wh = build_warehouse(make_isolated_settings())
    _create_without(isolated_engine, wh, logical, column)
    error = _contract_error(isolated_engine, wh)
    assert len(error.problems) == 1
    assert error.problems[0].startswith(f"table '{_qualified(wh[logical])}' ")
    assert f"has no column '{column}'" in error.problems[0]
    assert f"expected columns: {', '.join(required_columns(wh[logical]))}" in error.problems[0]


def test_configured_names_appear_in_the_error(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    settings = make_isolated_settings(tables={"interactions": "crm_contacts"})
    wh = build_warehouse(settings)
    _create_without(isolated_engine, wh, "activity", "event_type")
    with isolated_engine.begin() as conn:
        conn.execute(sa.schema.DropTable(wh["interactions"]))
    error = _contract_error(isolated_engine, wh)
    text = str(error)
    assert len(error.problems) == 2
    assert "crm_contacts" in text
    assert "crm_contacts' (contract table 'interactions'); expected columns: " in text
    assert (
        "its name is tables.interactions (RETENTION_TABLES__INTERACTIONS, or interactions "
        "under [tables] in the TOML file)" in text
    )
    assert "has no column 'event_type'" in text
    create_source_tables(isolated_engine, wh)
    with isolated_engine.begin() as conn:
        conn.execute(sa.schema.DropTable(wh["activity"]))
    create_source_tables(isolated_engine, wh)
    check_contract(isolated_engine, wh)


@pytest.mark.postgres
def test_missing_source_schema_is_named(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(pg_url, source_schema="crm")
    wh = build_warehouse(settings)
    engine = sa.create_engine(pg_url)
    with pytest.raises(ContractError, match="schema 'crm' does not exist") as caught:
        check_contract(engine, wh)
    assert "RETENTION_SOURCE_SCHEMA" in str(caught.value)
    create_source_tables(engine, wh)
    check_contract(engine, wh)
    engine.dispose()


def test_outputs_ask_for_init_db(
    make_isolated_settings: Callable[..., Settings], isolated_engine: sa.Engine
) -> None:
    settings = make_isolated_settings()
    wh = build_warehouse(settings)
    with pytest.raises(ContractError, match="run `retention init-db`") as caught:
        check_outputs(isolated_engine, wh)
    if settings.output_schema:
        assert caught.value.problems == [
            f"schema '{settings.output_schema}' does not exist (set by RETENTION_OUTPUT_SCHEMA)"
        ]
    else:
        assert len(caught.value.problems) == len(OUTPUT_TABLES) + 1
    init_db(isolated_engine, wh)
    check_outputs(isolated_engine, wh)
    with isolated_engine.begin() as conn:
        conn.execute(sa.schema.DropTable(wh["scoring_runs"]))
    with pytest.raises(ContractError, match=r"missing table .*scoring_runs"):
        check_outputs(isolated_engine, wh)
    init_db(isolated_engine, wh)
    version = wh["schema_version"]
    with isolated_engine.begin() as conn:
        conn.execute(
            version.insert().values(version=SCHEMA_VERSION + 1, applied_at=datetime.now(UTC))
        )
    with pytest.raises(ContractError, match="upgrade retention-risk"):
        check_outputs(isolated_engine, wh)
