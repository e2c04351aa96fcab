"""Configuration never becomes SQL, data stays data, the password stays secret, least privilege.

* Every identifier setting (each table name, ``source_schema``, ``output_schema``) refuses
  anything but a plain identifier, from keyword arguments and from the environment; the
  plain identifiers that SQL reserves or that need quoting work end to end.
* Injection strings, quotes, separators and unicode in data values go through extraction,
  features, scoring and the list verbatim, and every table survives.
* A run with a password in the warehouse URL, succeeded and failed, through the flow and
  the command line: the password is nowhere in logs, output, artifacts, Prefect's records
  or ``scoring_runs``.
* A PostgreSQL role with SELECT on the source tables and write access to the output tables
  only runs the whole nightly job; a missing grant fails clearly, naming the table.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from flows.cli import app
from flows.nightly import nightly_score, score_day
from flows.retrain import train_and_register
from tests.hardening.conftest import AS_OF, TrainedWarehouse, secret_of
from tests.hardening.helpers import (
    BackendKiller,
    admin_engine,
    assert_secret_absent,
    holding,
    job_env,
    wait_until,
)
from warehouse.contract import check_contract
from warehouse.db import engine_for
from warehouse.outputs import read_retention_list
from warehouse.schema import OUTPUT_TABLES, SOURCE_TABLES, build_warehouse
from warehouse.settings import Settings, TableNames

RETENTION = Path(sys.executable).with_name("retention")

# --------------------------------------------------------------------------------------------
# Identifiers from configuration
# --------------------------------------------------------------------------------------------

IDENTIFIER_SETTINGS = [f"tables.{name}" for name in TableNames.model_fields] + [
    "source_schema",
    "output_schema",
]

INJECTIONS = [
    "customers; DROP TABLE customers",
    'customers" ; DROP TABLE customers; --',
    "customers' OR '1'='1",
    "customers--",
    "customers/**/",
    "public.customers",
    '"customers"',
    "[customers]",
    "`customers`",
    "customers\n",
    " customers",
    "",
    "1customers",
    "cust-omers",
    "cust omers",
    "custömers",
    "c" * 64,
]


def _settings_with(setting: str, value: str) -> dict[str, Any]:
    if setting.startswith("tables."):
        return {"tables": {setting.removeprefix("tables."): value}}
    return {setting: value}


def _env_name(setting: str) -> str:
    return "RETENTION_" + setting.replace("tables.", "tables__").upper()


@pytest.mark.parametrize("setting", IDENTIFIER_SETTINGS)
def test_every_identifier_setting_refuses_anything_but_a_plain_identifier(
    setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for payload in INJECTIONS:
        with pytest.raises(ValidationError, match="not a valid identifier"):
            Settings(**_settings_with(setting, payload))
        monkeypatch.setenv(_env_name(setting), payload)
        with pytest.raises(ValidationError, match="not a valid identifier"):
            Settings()
        monkeypatch.delenv(_env_name(setting))
    # The longest and the most awkward plain identifiers are accepted.
    for plain in ("c" * 63, "_", "Select", "order"):
        Settings(**_settings_with(setting, plain))


RESERVED_NAMES = {
    "customers": "select",
    "subscriptions": "Renewals",
    "interactions": "user",
    "activity": "group",
    "retention_contacts": "order",
    "retention_list": "table",
    "scoring_runs": "Runs",
    "model_registry": "default",
    "schema_version": "limit",
}


def test_reserved_words_and_mixed_case_names_are_quoted_everywhere(
    trained: TrainedWarehouse,
) -> None:
    before = trained.full_list()
    wh = trained.wh
    schemas: dict[str, str | None] = {"source_schema": None, "output_schema": None}
    statements = []
    for logical, name in RESERVED_NAMES.items():
        statements.append(f'ALTER TABLE {wh[logical].name} RENAME TO "{name}"')
    if trained.backend == "postgres":
        schemas = {"source_schema": "From", "output_schema": "Where"}
        statements += ['CREATE SCHEMA "From"', 'CREATE SCHEMA "Where"']
        for logical, name in RESERVED_NAMES.items():
            schema = schemas["source_schema" if logical in SOURCE_TABLES else "output_schema"]
            statements.append(f'ALTER TABLE "{name}" SET SCHEMA "{schema}"')
    trained.execute(*statements)

    settings = trained.settings_with(tables=RESERVED_NAMES, **schemas)
    renamed = build_warehouse(settings)
    engine = engine_for(settings)
    try:
        check_contract(engine, renamed)
        result = score_day(settings, AS_OF)
        assert result.status == "succeeded"
        after = read_retention_list(engine, renamed, as_of=AS_OF, listed_only=False)
        with engine.connect() as conn:
            runs = renamed["scoring_runs"]
            status = conn.execute(
                sa.select(runs.c.status).where(runs.c.run_id == result.run_id)
            ).scalar_one()
    finally:
        engine.dispose()
    assert status == "succeeded"
    assert after["run_id"].unique().to_list() == [result.run_id]
    assert after.sort("customer_id").drop("run_id").equals(before.drop("run_id"))


# --------------------------------------------------------------------------------------------
# Data values
# --------------------------------------------------------------------------------------------

VALUES = [
    "'); DROP TABLE customers; --",
    "x' OR '1'='1",
    '"quoted", with a comma',
    "tab\there\nnew line",
    "back\\slash \\N NULL",
    "ünïcødé 顧客 🚀",
    "",
    "  padded  ",
    "$$; DROP TABLE activity; $$",
]
"""Each at most 32 characters: they fit every text column they are written to."""

_SOURCE_COLUMNS = (
    ("customers", "segment"),
    ("interactions", "channel"),
    ("activity", "event_type"),
    ("retention_contacts", "outcome"),
)


def _counts(engine: sa.Engine, trained: TrainedWarehouse) -> dict[str, int]:
    wh = trained.wh
    with engine.connect() as conn:
        return {
            name: int(conn.execute(sa.select(sa.func.count()).select_from(wh[name])).scalar_one())
            for name in (*SOURCE_TABLES, *OUTPUT_TABLES)
        }


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement SQLAlchemy sends to any database while the test runs."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    sa.event.listen(sa.Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", record)


def test_hostile_data_values_round_trip_verbatim_and_every_table_survives(
    trained: TrainedWarehouse, statements: list[str]
) -> None:
    before = trained.full_list()
    wh = trained.wh
    customers = before["customer_id"].head(len(VALUES)).to_list()
    engine = engine_for(trained.settings)
    try:
        with engine.begin() as conn:
            for value, customer in zip(VALUES, customers, strict=True):
                for logical, column in _SOURCE_COLUMNS:
                    table = wh[logical]
                    # Bound parameters: the values reach the tables as they are.
                    conn.execute(
                        sa.update(table)
                        .where(table.c.customer_id == customer)
                        .values({column: value})
                    )
        counts = _counts(engine, trained)
        statements.clear()

        result = score_day(trained.settings, AS_OF)
        assert result.status == "succeeded"

        assert _counts(engine, trained) == {**counts, "scoring_runs": counts["scoring_runs"] + 1}
        with engine.connect() as conn:
            for logical, column in _SOURCE_COLUMNS:
                table = wh[logical]
                stored = conn.execute(
                    sa.select(table.c.customer_id, table.c[column]).where(
                        table.c.customer_id.in_(customers)
                    )
                ).all()
                by_customer = {row[0]: row[1] for row in stored}
                for value, customer in zip(VALUES, customers, strict=True):
                    if customer in by_customer:
                        assert by_customer[customer] == value, (logical, column, customer)
        # Reading the list by a hostile segment binds it too.
        for value, customer in zip(VALUES, customers, strict=True):
            rows = read_retention_list(engine, wh, as_of=AS_OF, segment=value, listed_only=False)
            assert rows["customer_id"].to_list() == [customer], repr(value)
    finally:
        engine.dispose()

    after = trained.full_list()
    assert after["run_id"].unique().to_list() == [result.run_id]
    segments = dict(zip(after["customer_id"], after["segment"], strict=True))
    for value, customer in zip(VALUES, customers, strict=True):
        assert segments[customer] == value, f"segment of customer {customer} came back changed"
    untouched = after.filter(~pl.col("customer_id").is_in(customers))
    assert untouched["segment"].equals(
        before.filter(~pl.col("customer_id").is_in(customers))["segment"]
    )
    # No value was spliced into SQL text: they all travelled as parameters or data.
    assert statements
    distinctive = [value for value in VALUES if len(value.strip()) >= 4]
    for statement in statements:
        for value in distinctive:
            assert value not in statement, statement


# --------------------------------------------------------------------------------------------
# The warehouse password
# --------------------------------------------------------------------------------------------


def _prefect_records(flow_run_ids: list[Any], since: datetime) -> list[str]:
    """Every flow run, task run, log and artifact the Prefect API holds for these runs.

    The command line's flow run is found by its start time. Logs and task run states reach
    the API in the background: wait until the failed run's exception log is there.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterStartTime,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.types._datetime import DateTime

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)

    def read() -> list[str] | None:
        texts: list[str] = []
        with get_client(sync_client=True) as client:
            started = FlowRunFilterStartTime(after_=DateTime.fromisoformat(since.isoformat()))
            recent = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=started))
            ids = sorted({*flow_run_ids, *(run.id for run in recent)}, key=str)
            only = FlowRunFilter(id=FlowRunFilterId(any_=ids))
            texts += [run.model_dump_json() for run in client.read_flow_runs(flow_run_filter=only)]
            texts += [run.model_dump_json() for run in client.read_task_runs(flow_run_filter=only)]
            logs: list[str] = []
            while True:
                page = client.read_logs(
                    LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=len(logs)
                )
                logs += [log.model_dump_json() for log in page]
                if len(page) < 200:
                    break
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids))
            )
            texts += logs + [artifact.model_dump_json() for artifact in artifacts]
        if len(ids) < 3 or not any("Encountered exception" in log for log in logs):
            return None
        return texts

    texts: list[str] = wait_until(read, timeout=30, what="Prefect's logs of the three runs")
    assert any('"key":"retention-list-' in text for text in texts), "no artifacts read back"
    return texts


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RETENTION), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


@pytest.mark.postgres
@pytest.mark.usefixtures("prefect_harness")
def test_the_password_never_appears_in_logs_output_artifacts_or_run_records(
    pg_trained: TrainedWarehouse,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.settings import PREFECT_API_URL

    password = secret_of(pg_trained.url)
    since = datetime.now(UTC)
    caplog.set_level(logging.DEBUG)
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", "prefect.client"):
        caplog.set_level(logging.DEBUG, logger=name)
    flow_run_ids = []

    # A run that succeeds, with its artifacts.
    state = nightly_score(as_of=AS_OF, settings=pg_trained.settings, return_state=True)
    assert state.is_completed(), state.message
    flow_run_ids.append(state.state_details.flow_run_id)

    # A run that fails in the middle: extraction's connection is cut and, on the retry, the
    # database refuses new connections (the driver gets the URL with the password again).
    settings = pg_trained.settings_with(db_retries=1)
    admin = pg_trained.admin()
    database = pg_trained.database

    def refuse_connections(allow: bool) -> None:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {allow}'))

    lock = f"LOCK TABLE {pg_trained.wh['subscriptions'].name} IN ACCESS EXCLUSIVE MODE"
    try:
        with holding(pg_trained.url, lock):
            killer = BackendKiller(
                admin, database, times=1, before_first=lambda: refuse_connections(False)
            )
            killer.start()
            try:
                failed_state = nightly_score(as_of=AS_OF, settings=settings, return_state=True)
            finally:
                killer.stop()
    finally:
        refuse_connections(True)
        admin.dispose()
    assert failed_state.is_failed()
    flow_run_ids.append(failed_state.state_details.flow_run_id)
    failed = [run for run in pg_trained.runs() if run["kind"] == "nightly"][-1]
    assert failed["status"] == "failed"
    assert "not currently accepting connections" in failed["error"]

    # The command line, configured through the environment as a scheduler would.
    env = job_env(
        {"RETENTION_WAREHOUSE_URL": pg_trained.url, "RETENTION_LIST_CAPACITY": "50"},
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT_LOGGING_LEVEL="DEBUG",
    )
    completed = _cli("score", "--as-of", AS_OF.isoformat(), env=env)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "succeeded" in completed.stdout
    cli_outputs = [completed.stdout + completed.stderr]
    # Reading commands, in this process: the run history with its errors, the summary.
    for args in (("runs", "--limit", "20"), ("check",)):
        result = CliRunner().invoke(app, [*args, "--warehouse", pg_trained.url])
        assert result.exit_code == 0, result.output
        cli_outputs.append(result.output)
    assert "not currently accepting connections" in cli_outputs[1]
    assert ":***@127.0.0.1" in cli_outputs[2], "check prints the URL, masked"

    captured = capfd.readouterr()
    records = [record.getMessage() for record in caplog.records]
    records += [str(record.exc_info[1]) for record in caplog.records if record.exc_info]
    assert any("Encountered exception" in record for record in records), "logs not captured"
    assert_secret_absent(password, "\n".join(records), "the logs")
    assert_secret_absent(password, captured.out + captured.err, "stdout/stderr")
    for output in cli_outputs:
        assert_secret_absent(password, output, "the command line output")
    for run in pg_trained.runs():
        assert_secret_absent(password, run, "scoring_runs")
    prefect_records = _prefect_records(flow_run_ids, since)
    assert any('"warehouse_url":"**********"' in text for text in prefect_records)
    for text in prefect_records:
        assert_secret_absent(password, text, "Prefect's records")


# --------------------------------------------------------------------------------------------
# Least privilege on PostgreSQL
# --------------------------------------------------------------------------------------------


SCHEMA_LAYOUTS: dict[str, dict[str, str | None]] = {
    "default schema": {"source_schema": None, "output_schema": None},
    "own schemas": {"source_schema": "crm", "output_schema": "retention"},
}


@dataclass
class JobRole:
    """A login role with the nightly job's grants only, and the job's settings as that role."""

    name: str
    url: str
    settings: Settings
    admin: TrainedWarehouse
    """The same warehouse seen by the administrator (same layout)."""


@pytest.fixture(params=list(SCHEMA_LAYOUTS))
def job_role(request: pytest.FixtureRequest, pg_trained: TrainedWarehouse) -> Iterator[JobRole]:
    """The grants of docs/operations.md, tables in the default schema or in schemas of their own."""
    layout = SCHEMA_LAYOUTS[request.param]
    admin = replace(pg_trained, settings=pg_trained.settings_with(**layout))
    wh = admin.wh
    moves = []
    for schema in sorted({s for s in layout.values() if s}):
        moves.append(f"CREATE SCHEMA {schema}")
    for table in wh.tables.values():
        if table.schema:
            moves.append(f"ALTER TABLE {table.name} SET SCHEMA {table.schema}")
    role = f"rr_job_{uuid.uuid4().hex[:10]}"
    password = uuid.uuid4().hex
    schemas = ", ".join(sorted({table.schema or "public" for table in wh.tables.values()}))
    sources = ", ".join(wh[name].fullname for name in SOURCE_TABLES)
    admin.execute(
        *moves,
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}'",
        f'GRANT CONNECT ON DATABASE "{admin.database}" TO {role}',
        f"GRANT USAGE ON SCHEMA {schemas} TO {role}",
        f"GRANT SELECT ON {sources} TO {role}",
        f"GRANT SELECT, INSERT, DELETE ON {wh['retention_list'].fullname} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE ON {wh['scoring_runs'].fullname} TO {role}",
        f"GRANT SELECT ON {wh['model_registry'].fullname}, {wh['schema_version'].fullname} "
        f"TO {role}",
    )
    url = make_url(admin.url).set(username=role, password=password)
    url_text = url.render_as_string(hide_password=False)
    try:
        yield JobRole(role, url_text, admin.settings_with(warehouse_url=url_text), admin)
    finally:
        admin.execute(f"DROP OWNED BY {role}")
        engine = admin.admin()
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f"DROP ROLE {role}"))
        finally:
            engine.dispose()


def _refused(url: str, statement: str) -> str:
    engine = admin_engine(url)
    try:
        with pytest.raises(sa.exc.ProgrammingError) as info, engine.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    return str(info.value.orig)


@pytest.mark.postgres
@pytest.mark.usefixtures("prefect_harness")
def test_a_role_with_only_the_documented_grants_runs_the_job_and_a_missing_grant_is_named(
    job_role: JobRole,
) -> None:
    admin = job_role.admin
    before = admin.full_list()

    result = score_day(job_role.settings, AS_OF)
    assert result.status == "succeeded"
    after = admin.full_list()
    assert after["run_id"].unique().to_list() == [result.run_id]
    assert after.drop("run_id").equals(before.drop("run_id"))

    # The role can do nothing else: no new tables, no writes to sources or the registry.
    wh = admin.wh
    url = job_role.url
    assert "permission denied" in _refused(url, "CREATE TABLE public.hardening_probe (x int)")
    assert "permission denied" in _refused(url, f"DELETE FROM {wh['customers'].fullname}")
    assert "permission denied" in _refused(
        url, f"UPDATE {wh['model_registry'].fullname} SET status = 'retired'"
    )

    # A grant taken away: the run fails, says which table, and the list stays.
    interactions = wh["interactions"]
    admin.execute(f"REVOKE SELECT ON {interactions.fullname} FROM {job_role.name}")
    denied = f"permission denied for table {interactions.name}"
    with pytest.raises(Exception, match=denied):
        score_day(job_role.settings, AS_OF)
    failed = [run for run in admin.runs() if run["kind"] == "nightly"][-1]
    assert failed["status"] == "failed"
    assert denied in failed["error"]
    assert admin.full_list().equals(after)

    # The command line says it in one line, without the password.
    layout = {
        f"RETENTION_{name.upper()}": value
        for name in ("source_schema", "output_schema")
        if (value := getattr(job_role.settings, name)) is not None
    }
    cli = CliRunner().invoke(
        app, ["score", "--as-of", AS_OF.isoformat(), "--warehouse", url], env=layout
    )
    assert cli.exit_code == 1 and isinstance(cli.exception, SystemExit), cli.output
    lines = [line for line in cli.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: database error: "), cli.output
    assert denied in lines[-1]
    assert_secret_absent(secret_of(url), cli.output, "the command line output")
    assert admin.full_list().equals(after)


@pytest.mark.postgres
def test_the_training_role_needs_only_the_registry_writes_beyond_the_nightly_grants(
    job_role: JobRole,
) -> None:
    """Retraining as the nightly role plus INSERT, UPDATE on model_registry (docs/operations.md).

    Training starts with ``init_db``; on current output tables it must issue no DDL, so no
    ``CREATE`` privilege is needed on the database or the schemas.
    """
    admin = job_role.admin
    wh = admin.wh
    registry, runs = wh["model_registry"], wh["scoring_runs"]
    admin.execute(f"GRANT INSERT, UPDATE ON {registry.fullname} TO {job_role.name}")

    training = train_and_register(job_role.settings, AS_OF, promote=True)

    engine = admin_engine(admin.url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(registry.c.status).where(registry.c.model_version == training.version)
            ).all()
            run_kinds = conn.execute(
                sa.select(runs.c.status).where(runs.c.model_version == training.version)
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert rows[0].status == ("champion" if training.promoted else "challenger")
    assert [row.status for row in run_kinds] == ["succeeded"]
    # Still no DDL: the role cannot create a table in the output schema.
    schema = registry.schema or "public"
    assert "permission denied" in _refused(
        job_role.url, f"CREATE TABLE {schema}.hardening_probe (x int)"
    )
