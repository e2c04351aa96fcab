"""The warehouse contract, declared once in SQLAlchemy Core.

Source tables are read; output tables are created and written by the job.
Table and schema names come from :class:`warehouse.settings.Settings` and are
validated identifiers; SQLAlchemy quotes them where needed.

Everything else that needs the shape of a table (Polars dtypes for extraction,
the validation rules, the demo generator, docs) derives it from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from warehouse.settings import Settings, setting_sources

SCHEMA_VERSION = 2
"""Version of the output tables. Bump it with a migration in ``warehouse.migrate``."""

SOURCE_TABLES = ("customers", "subscriptions", "interactions", "activity", "retention_contacts")
OUTPUT_TABLES = ("retention_list", "scoring_runs", "model_registry")

TS = sa.DateTime(timezone=True)

# Column declarations, one function per table so the same definition can be bound to any
# MetaData / name / schema. ``nullable`` follows the data contract in docs/data-contract.md.


def _customers() -> list[sa.Column[object]]:
    return [
        sa.Column("customer_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("signup_at", TS, nullable=False),
        sa.Column("segment", sa.String(64)),
        sa.Column("country", sa.String(64)),
        sa.Column("language", sa.String(32)),
        sa.Column("monthly_value", sa.Float),
    ]


def _subscriptions() -> list[sa.Column[object]]:
    return [
        sa.Column("customer_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("ended_at", TS),
        sa.Column("plan", sa.String(64)),
        sa.Column("mrr", sa.Float),
    ]


def _interactions() -> list[sa.Column[object]]:
    return [
        sa.Column("interaction_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("customer_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("opened_at", TS, nullable=False, index=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("is_public", sa.Boolean, nullable=False),
        sa.Column("first_response_at", TS),
        sa.Column("resolved_at", TS),
        sa.Column("transfers", sa.Integer, nullable=False),
        sa.Column("reopened", sa.Boolean, nullable=False),
        sa.Column("csat", sa.SmallInteger),
    ]


def _activity() -> list[sa.Column[object]]:
    return [
        sa.Column("customer_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("occurred_at", TS, nullable=False, index=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("value", sa.Float),
    ]


def _retention_contacts() -> list[sa.Column[object]]:
    return [
        sa.Column("customer_id", sa.BigInteger, nullable=False, index=True),
        sa.Column("contacted_at", TS, nullable=False),
        sa.Column("outcome", sa.String(64)),
    ]


def _retention_list() -> list[sa.Column[object]]:
    return [
        sa.Column("as_of", sa.Date, primary_key=True),
        sa.Column("customer_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("listed", sa.Boolean, nullable=False),
        sa.Column("churn_probability", sa.Float, nullable=False),
        sa.Column("value_at_risk", sa.Float, nullable=False),
        sa.Column("customer_value", sa.Float, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("segment", sa.String(64)),
        sa.Column("cooled_down", sa.Boolean, nullable=False),
        sa.Column("reason_source", sa.String(16), nullable=False),
        sa.Column("reason_1_code", sa.String(64)),
        sa.Column("reason_1", sa.Text),
        sa.Column("reason_2_code", sa.String(64)),
        sa.Column("reason_2", sa.Text),
        sa.Column("reason_3_code", sa.String(64)),
        sa.Column("reason_3", sa.Text),
        sa.Column("action_code", sa.String(64)),
        sa.Column("recommended_action", sa.Text),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
    ]


def _scoring_runs() -> list[sa.Column[object]]:
    return [
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("as_of", sa.Date),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("host", sa.String(255)),
        sa.Column("pid", sa.Integer),
        sa.Column("pid_scope", sa.String(128)),
        sa.Column("model_version", sa.String(64)),
        sa.Column("n_scored", sa.Integer),
        sa.Column("n_listed", sa.Integer),
        sa.Column("n_quarantined", sa.Integer),
        sa.Column("n_cooled_down", sa.Integer),
        sa.Column("timings", sa.JSON(none_as_null=True)),
        sa.Column("data_quality", sa.JSON(none_as_null=True)),
        sa.Column("drift", sa.JSON(none_as_null=True)),
        sa.Column("error", sa.Text),
    ]


def _model_registry() -> list[sa.Column[object]]:
    return [
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_changed_at", TS, nullable=False),
        sa.Column("label_kind", sa.String(16), nullable=False),
        sa.Column("horizon_days", sa.Integer, nullable=False),
        sa.Column("training_start", sa.Date, nullable=False),
        sa.Column("training_end", sa.Date, nullable=False),
        sa.Column("snapshot_dates", sa.JSON, nullable=False),
        sa.Column("holdout_dates", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("categorical_features", sa.JSON, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("library_versions", sa.JSON, nullable=False),
        sa.Column("booster", sa.Text, nullable=False),
        sa.Column("booster_sha256", sa.String(64), nullable=False),
        sa.Column("calibrator", sa.JSON, nullable=False),
        sa.Column("training_reference", sa.JSON(none_as_null=True)),
        sa.Column("report_path", sa.Text),
    ]


def _schema_version() -> list[sa.Column[object]]:
    return [
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_at", TS, nullable=False),
    ]


_COLUMNS = {
    "customers": _customers,
    "subscriptions": _subscriptions,
    "interactions": _interactions,
    "activity": _activity,
    "retention_contacts": _retention_contacts,
    "retention_list": _retention_list,
    "scoring_runs": _scoring_runs,
    "model_registry": _model_registry,
    "schema_version": _schema_version,
}


@dataclass(frozen=True)
class Warehouse:
    """The bound tables for one configuration, keyed by their logical (contract) name."""

    metadata: sa.MetaData
    tables: dict[str, sa.Table]

    def __getitem__(self, logical_name: str) -> sa.Table:
        return self.tables[logical_name]

    @property
    def sources(self) -> dict[str, sa.Table]:
        return {name: self.tables[name] for name in SOURCE_TABLES}

    @property
    def outputs(self) -> list[sa.Table]:
        return [self.tables[name] for name in (*OUTPUT_TABLES, "schema_version")]


class TableNameConflictError(ValueError):
    """Two contract tables are configured to the same table of the same schema."""


def build_warehouse(settings: Settings) -> Warehouse:
    """Bind the contract to the configured table and schema names.

    Raises :class:`TableNameConflictError` when two contract tables would be one table.
    """
    metadata = sa.MetaData()
    tables: dict[str, sa.Table] = {}
    claimed: dict[tuple[str | None, str], str] = {}
    for logical, columns in _COLUMNS.items():
        physical = getattr(settings.tables, logical)
        schema = settings.source_schema if logical in SOURCE_TABLES else settings.output_schema
        other = claimed.setdefault((schema, physical.lower()), logical)
        if other != logical:
            where = f"{schema}.{physical}" if schema else physical
            raise TableNameConflictError(
                f"tables.{other} and tables.{logical} both name the table {where!r}; give "
                f"each contract table its own: {setting_sources(('tables', logical))}"
            )
        tables[logical] = sa.Table(physical, metadata, *columns(), schema=schema)
    return Warehouse(metadata=metadata, tables=tables)


def polars_dtype(column: sa.Column[object]) -> pl.DataType:
    """The Polars dtype that a contract column has after extraction (timestamps in UTC)."""
    t = column.type
    if isinstance(t, sa.DateTime):
        return pl.Datetime("us", "UTC")
    if isinstance(t, sa.Date):
        return pl.Date()
    if isinstance(t, sa.Boolean):
        return pl.Boolean()
    if isinstance(t, sa.SmallInteger | sa.Integer | sa.BigInteger):
        return pl.Int64()
    if isinstance(t, sa.Float):
        return pl.Float64()
    if isinstance(t, sa.JSON):
        return pl.String()
    if isinstance(t, sa.String | sa.Text):
        return pl.String()
    raise TypeError(f"no Polars dtype for column {column.name} of type {t!r}")


def polars_schema(table: sa.Table) -> pl.Schema:
    """Column name -> Polars dtype for a contract table, in declaration order."""
    return pl.Schema({c.name: polars_dtype(c) for c in table.columns})


def contract_table(logical_name: str) -> sa.Table:
    """A contract table under its logical name, unbound to any configuration."""
    return sa.Table(logical_name, sa.MetaData(), *_COLUMNS[logical_name]())


def contract_schema(logical_name: str) -> pl.Schema:
    """Polars schema of a contract table by its logical name, independent of configuration."""
    return polars_schema(contract_table(logical_name))


def required_not_null(logical_name: str) -> list[str]:
    """Columns of a contract table that must not be null."""
    return [c.name for c in contract_table(logical_name).columns if not c.nullable]


def required_columns(table: sa.Table) -> list[str]:
    """Columns that must exist in a source table (all contract columns)."""
    return [c.name for c in table.columns]
