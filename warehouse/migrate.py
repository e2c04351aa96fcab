"""Creating the job's output tables and keeping them at this release's schema version.

``init_db`` is idempotent: it creates what is missing, migrates an older version
step by step through :data:`MIGRATIONS`, records :data:`~warehouse.schema.SCHEMA_VERSION`
with the time it was applied, and refuses to touch a warehouse whose version is newer
than this release knows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from warehouse.schema import SCHEMA_VERSION, Warehouse


class SchemaVersionError(RuntimeError):
    """The warehouse's output tables are at a version this release cannot work with."""


@dataclass(frozen=True)
class Migration:
    """One step that brings the output tables from ``from_version`` to ``from_version + 1``."""

    from_version: int
    description: str
    apply: Callable[[sa.Connection, Warehouse], None]


def _add_column(conn: sa.Connection, table: sa.Table, name: str) -> None:
    """Add ``table``'s declared column ``name`` to the database table when it lacks it.

    The column must be nullable: existing rows get null.
    """
    column = table.c[name]
    if not column.nullable:
        raise ValueError(f"{table.fullname}.{name}: only a nullable column can be added")
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name, schema=table.schema):
        return  # created whole, with the column, after the migrations
    if name in {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}:
        return
    preparer = conn.dialect.identifier_preparer
    spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {spec}"))


def _add_pid_scope(conn: sa.Connection, wh: Warehouse) -> None:
    _add_column(conn, wh["scoring_runs"], "pid_scope")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        from_version=1,
        description="scoring_runs.pid_scope: the boot and PID namespace in which pid is valid",
        apply=_add_pid_scope,
    ),
)
"""Ordered steps from older schema versions."""


def _create_schemas(conn: sa.Connection, schemas: Iterable[str | None]) -> None:
    """Create the PostgreSQL schemas that do not exist yet.

    An existing schema is left alone without issuing DDL: ``CREATE SCHEMA IF NOT EXISTS``
    checks the ``CREATE`` privilege on the database even when the schema is there, and a
    role that may only write the output tables must still be able to run ``init_db``.
    """
    if conn.dialect.name != "postgresql":
        return
    inspector = sa.inspect(conn)
    for schema in sorted({s for s in schemas if s}):
        if not inspector.has_schema(schema):
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))


def _version_table(wh: Warehouse) -> sa.Table:
    return wh["schema_version"]


def _read_version(conn: sa.Connection, wh: Warehouse) -> int | None:
    table = _version_table(wh)
    if not sa.inspect(conn).has_table(table.name, schema=table.schema):
        return None
    version = conn.execute(sa.select(sa.func.max(table.c.version))).scalar_one_or_none()
    return None if version is None else int(version)


def current_version(engine: sa.Engine, wh: Warehouse) -> int | None:
    """The newest schema version recorded in the warehouse, or None before ``init_db``."""
    with engine.connect() as conn:
        return _read_version(conn, wh)


def _migration_path(version: int) -> list[Migration]:
    steps = {m.from_version: m for m in MIGRATIONS}
    path: list[Migration] = []
    while version < SCHEMA_VERSION:
        step = steps.get(version)
        if step is None:
            raise SchemaVersionError(
                f"the warehouse's output tables are at schema version {version}; this release "
                f"needs version {SCHEMA_VERSION} and has no migration from version {version}"
            )
        path.append(step)
        version += 1
    return path


def _record_version(conn: sa.Connection, wh: Warehouse, version: int) -> None:
    table = _version_table(wh)
    exists = conn.execute(sa.select(table.c.version).where(table.c.version == version)).first()
    if exists is None:
        conn.execute(table.insert().values(version=version, applied_at=datetime.now(UTC)))


def _newer_than_release(wh: Warehouse, version: int) -> SchemaVersionError:
    table = _version_table(wh)
    return SchemaVersionError(
        f"the warehouse's output tables ({table.fullname}) are at schema version "
        f"{version}, newer than this release of retention-risk knows "
        f"({SCHEMA_VERSION}); upgrade retention-risk instead of running init-db"
    )


def require_known_schema(engine: sa.Engine, wh: Warehouse) -> int | None:
    """The output tables' schema version (None before ``init_db``), without any DDL.

    Raises :class:`SchemaVersionError` when a newer release migrated them: this release
    must not write into a layout it does not know.
    """
    version = current_version(engine, wh)
    if version is not None and version > SCHEMA_VERSION:
        raise _newer_than_release(wh, version)
    return version


def init_db(engine: sa.Engine, wh: Warehouse) -> int:
    """Create the output tables (idempotently), migrate or record the version; return it.

    Creates the configured output schema on PostgreSQL when it is missing. Raises
    :class:`SchemaVersionError` when the warehouse is at a newer version than
    :data:`~warehouse.schema.SCHEMA_VERSION` or no migration path exists.
    """
    with engine.begin() as conn:
        _create_schemas(conn, (table.schema for table in wh.outputs))
        version = _read_version(conn, wh)
        if version is not None and version > SCHEMA_VERSION:
            raise _newer_than_release(wh, version)
        if version is not None:
            for step in _migration_path(version):
                step.apply(conn, wh)
                wh.metadata.create_all(conn, tables=[_version_table(wh)], checkfirst=True)
                _record_version(conn, wh, step.from_version + 1)
        wh.metadata.create_all(conn, tables=wh.outputs, checkfirst=True)
        _record_version(conn, wh, SCHEMA_VERSION)
    return SCHEMA_VERSION


def create_source_tables(engine: sa.Engine, wh: Warehouse, *, indexes: bool = True) -> None:
    """Create the five source tables (and the source schema on PostgreSQL) when missing.

    For the demo generator and tests; a real warehouse already has its source tables.
    ``indexes=False`` leaves out the secondary indexes so a large load runs several
    times faster; build them afterwards with :func:`create_source_indexes`.
    """
    tables = list(wh.sources.values())
    with engine.begin() as conn:
        _create_schemas(conn, (table.schema for table in tables))
        if indexes:
            wh.metadata.create_all(conn, tables=tables, checkfirst=True)
            return
        inspector = sa.inspect(conn)
        for table in tables:
            if not inspector.has_table(table.name, schema=table.schema):
                conn.execute(sa.schema.CreateTable(table))


def create_source_indexes(engine: sa.Engine, wh: Warehouse) -> None:
    """Create the source tables' secondary indexes that are missing."""
    with engine.begin() as conn:
        for table in wh.sources.values():
            for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                index.create(conn, checkfirst=True)
