"""Checking that the warehouse has the tables and columns the data contract names.

The check inspects the database (honouring the configured table and schema names)
and reports every problem at once, so one run tells the user everything to fix.
Extra columns and tables are fine: only what the contract needs is checked.

Column types are checked where the extraction depends on them: a timestamp column must be
a timestamp, a date or text (ISO 8601), because the extraction window compares it in SQL.
Other type mismatches are found when the values are read, with the rows that fail.
SQLite declares types only as affinities, so there the values decide, not the declaration.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from warehouse.schema import SCHEMA_VERSION, Warehouse, required_columns
from warehouse.settings import setting_sources

ReflectedTypes = dict[str, dict[str, sa.types.TypeEngine[Any]]]
"""Per contract table (logical name), the type the database reports for each contract column."""

_TIME_STORAGE = (sa.DateTime, sa.Date, sa.String, sa.types.NullType)
"""Column types a contract timestamp may have in the database (text holds ISO 8601)."""


class ContractError(ValueError):
    """The warehouse lacks tables or columns the data contract needs; ``problems`` lists them."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


def _qualified(table: sa.Table) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name


def _column_types(
    inspector: sa.Inspector, table: sa.Table, case_insensitive: bool
) -> dict[str, sa.types.TypeEngine[Any]] | None:
    if not inspector.has_table(table.name, schema=table.schema):
        return None
    columns = inspector.get_columns(table.name, table.schema)
    return {
        (str(c["name"]).lower() if case_insensitive else str(c["name"])): c["type"] for c in columns
    }


def _type_name(sql_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    try:
        return str(sql_type.compile(dialect=dialect))
    except Exception:
        return type(sql_type).__name__


def _type_problem(
    engine: sa.Engine,
    table: sa.Table,
    logical: str,
    column: sa.Column[Any],
    reflected: sa.types.TypeEngine[Any],
) -> str | None:
    """A problem when a contract timestamp column has a type the window cannot compare."""
    if engine.dialect.name == "sqlite" or not isinstance(column.type, sa.DateTime):
        return None
    if isinstance(reflected, _TIME_STORAGE):
        return None
    return (
        f"table {_qualified(table)!r} (contract table {logical!r}) column {column.name!r} "
        f"has type {_type_name(reflected, engine.dialect)}; the contract needs a timestamp "
        "(timestamp with time zone, timestamp, date, or ISO 8601 text)"
    )


def _problems(
    engine: sa.Engine,
    tables: Iterable[tuple[str, sa.Table]],
    schema_setting: str,
    reflected: ReflectedTypes | None = None,
) -> list[str]:
    """Every missing schema, table and column and every unusable timestamp type.

    The types of the contract columns found are stored in ``reflected`` when given.
    """
    inspector = sa.inspect(engine)
    case_insensitive = engine.dialect.name == "sqlite"
    pairs = list(tables)
    problems: list[str] = []
    wanted_schemas = sorted({t.schema for _, t in pairs if t.schema})
    if wanted_schemas:
        existing = set(inspector.get_schema_names())
        missing_schemas = [s for s in wanted_schemas if s not in existing]
        for schema in missing_schemas:
            problems.append(f"schema {schema!r} does not exist (set by {schema_setting})")
        pairs = [(logical, t) for logical, t in pairs if t.schema not in missing_schemas]
    for logical, table in pairs:
        expected = required_columns(table)
        present = _column_types(inspector, table, case_insensitive)
        renamed = (
            "" if table.name == logical else f"; its name is {setting_sources(('tables', logical))}"
        )
        if present is None:
            problems.append(
                f"missing table {_qualified(table)!r} (contract table {logical!r}); "
                f"expected columns: {', '.join(expected)}{renamed}"
            )
            continue
        found: dict[str, sa.types.TypeEngine[Any]] = {}
        for column in expected:
            reflected_type = present.get(column.lower() if case_insensitive else column)
            if reflected_type is None:
                problems.append(
                    f"table {_qualified(table)!r} (contract table {logical!r}) has no column "
                    f"{column!r}; expected columns: {', '.join(expected)}"
                )
                continue
            found[column] = reflected_type
            problem = _type_problem(engine, table, logical, table.c[column], reflected_type)
            if problem is not None:
                problems.append(problem)
        if reflected is not None:
            reflected[logical] = found
    return problems


def check_contract(engine: sa.Engine, wh: Warehouse) -> ReflectedTypes:
    """Raise :class:`ContractError` listing every missing source table and column.

    Each missing table is named with its configured physical name and its contract
    name; each missing column with its table; a timestamp column whose type the
    extraction window cannot compare (a number, say) with its table and type. Extra
    columns are allowed. Returns the database's type of every contract column.
    """
    reflected: ReflectedTypes = {}
    problems = _problems(engine, wh.sources.items(), "RETENTION_SOURCE_SCHEMA", reflected)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ContractError(
            f"the source tables do not match the data contract ({len(problems)} problem(s)); "
            "see docs/data-contract.md, or point the job at your tables with "
            f"RETENTION_TABLES__<NAME> and RETENTION_SOURCE_SCHEMA:\n{listed}",
            problems,
        )
    return reflected


def check_outputs(engine: sa.Engine, wh: Warehouse) -> None:
    """Raise :class:`ContractError` when output tables, columns or the schema version are off.

    Missing tables or columns and an older recorded version ask for ``retention init-db``;
    a newer recorded version asks for an upgrade of retention-risk.
    """
    logical_outputs = [(name, t) for name, t in wh.tables.items() if t in wh.outputs]
    problems = _problems(engine, logical_outputs, "RETENTION_OUTPUT_SCHEMA")
    hint = "run `retention init-db` to create or migrate them"
    if not problems:
        version_table = wh["schema_version"]
        with engine.connect() as conn:
            version = conn.execute(sa.select(sa.func.max(version_table.c.version))).scalar()
        if version is None:
            problems.append(f"no schema version is recorded in {_qualified(version_table)!r}")
        elif int(version) < SCHEMA_VERSION:
            problems.append(
                f"the output tables are at schema version {version}; "
                f"this release needs {SCHEMA_VERSION}"
            )
        elif int(version) > SCHEMA_VERSION:
            problems.append(
                f"the output tables are at schema version {version}, newer than this "
                f"release knows ({SCHEMA_VERSION})"
            )
            hint = "upgrade retention-risk"
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ContractError(f"the output tables are not ready; {hint}:\n{listed}", problems)
