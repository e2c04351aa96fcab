"""Faults a nightly job meets over the years, each against a real database.

* The connection dies during extraction or during the write (``pg_terminate_backend`` from
  another session while the job waits on a lock the test holds): the Prefect flow retries
  the stage; when every attempt dies the run is recorded as failed with a clear error and
  the previous list stays.
* The process is killed (SIGKILL) in the middle of writing the list: nothing of the new
  list is visible, the run stays ``running`` until the next run marks it ``abandoned``,
  and the next run succeeds.
* The warehouse is down, or its output tables are newer than this release: the command
  line says so in one line and exits non-zero, without a traceback.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from flows.cli import app
from flows.nightly import nightly_score, score_day
from tests.hardening.conftest import AS_OF, TrainedWarehouse, secret_of, settings_env
from tests.hardening.helpers import (
    BackendKiller,
    JobPool,
    JobProcess,
    assert_secret_absent,
    backend_exists,
    holding,
    job_env,
    wait_until,
    waiting_backends,
)
from warehouse.db import engine_for
from warehouse.schema import SCHEMA_VERSION
from warehouse.settings import Settings

RETENTION = Path(sys.executable).with_name("retention")
T = TypeVar("T")


@pytest.fixture(scope="module", autouse=True)
def _jobs_ahead(job_pool: JobPool) -> None:
    """The kill tests' job processes start importing while the flow tests run."""
    job_pool.reserve(2)


def _attempts(flow_run_id: UUID, stage: str) -> int:
    """How many times the flow ran ``stage`` (a retried task run counts each attempt).

    Task run states reach the Prefect API as events, a moment after the flow returns:
    wait until the stage's task run shows its final state.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)

    def final_run() -> Any:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        mine = [run for run in runs if run.name.rsplit("-", 1)[0] == stage]
        assert len(mine) <= 1, [run.name for run in mine]
        if mine and mine[0].state is not None and mine[0].state.is_final():
            return mine[0]
        return None

    run = wait_until(final_run, timeout=30, what=f"the {stage} task run's final state")
    return int(run.run_count)


def _table(trained: TrainedWarehouse, logical: str) -> str:
    table = trained.wh[logical]
    return sa.dialects.postgresql.dialect().identifier_preparer.format_table(table)  # type: ignore[no-untyped-call]


def _score_while_killing(
    trained: TrainedWarehouse,
    settings: Settings,
    dropped: str,
    statement: str,
    params: dict[str, Any] | None = None,
) -> tuple[Any, BackendKiller, UUID]:
    """Run the nightly flow while the test holds ``statement``'s lock, terminating the job's
    backends that wait on it (the first one, or every one); the flow's state, the killer and
    the flow run id."""
    admin = trained.admin()
    with holding(trained.url, statement, params=params) as holder:
        killer = BackendKiller(
            admin,
            trained.database,
            times=1 if dropped == "first attempt" else None,
            release=holder.rollback,
        )
        killer.start()
        try:
            state = nightly_score(as_of=AS_OF, settings=settings, return_state=True)
        finally:
            killer.stop()
            admin.dispose()
    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    return state, killer, flow_run_id


# --------------------------------------------------------------------------------------------
# The connection dies mid-run (PostgreSQL)
# --------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("dropped", ["first attempt", "every attempt"])
def test_connection_killed_during_extraction_is_retried_then_fails_cleanly(
    pg_trained: TrainedWarehouse, dropped: str
) -> None:
    settings = pg_trained.settings_with(db_retries=2)
    before = pg_trained.full_list()
    lock = f"LOCK TABLE {_table(pg_trained, 'customers')} IN ACCESS EXCLUSIVE MODE"
    state, killer, flow_run_id = _score_while_killing(pg_trained, settings, dropped, lock)
    if dropped == "first attempt":
        assert state.is_completed(), state.message
        result = state.result()
        assert len(killer.killed) == 1
        assert _attempts(flow_run_id, "extract") == 2
        assert pg_trained.run(result.run_id)["status"] == "succeeded"
        after = pg_trained.full_list()
        assert after["run_id"].unique().to_list() == [result.run_id]
        assert after.drop("run_id").equals(before.drop("run_id"))
        return

    failed = [run for run in pg_trained.runs() if run["kind"] == "nightly"][-1]
    assert state.is_failed(), state.message
    assert len(killer.killed) == 3 == settings.db_retries + 1, (killer.killed, failed["error"])
    assert _attempts(flow_run_id, "extract") == 3, failed["error"]
    assert failed["status"] == "failed", failed
    assert failed["finished_at"] is not None
    assert "terminating connection due to administrator command" in failed["error"]
    assert failed["timings"] and "extract" in failed["timings"]
    assert_secret_absent(secret_of(pg_trained.url), failed, "the scoring_runs row")
    assert pg_trained.full_list().equals(before)


@pytest.mark.postgres
@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("dropped", ["first attempt", "every attempt"])
def test_connection_killed_during_the_write_keeps_the_previous_list(
    pg_trained: TrainedWarehouse, dropped: str
) -> None:
    settings = pg_trained.settings_with(db_retries=1)
    before = pg_trained.full_list()
    # Someone holds the day's rows (a long report query, a manual fix): the job's DELETE of
    # the day waits inside the write transaction, where the test cuts its connection.
    row_lock = (
        f"SELECT customer_id FROM {_table(pg_trained, 'retention_list')} "
        "WHERE as_of = :as_of FOR UPDATE"
    )
    state, killer, flow_run_id = _score_while_killing(
        pg_trained, settings, dropped, row_lock, {"as_of": AS_OF}
    )
    if dropped == "first attempt":
        assert state.is_completed(), state.message
        result = state.result()
        assert len(killer.killed) == 1
        assert _attempts(flow_run_id, "write-list") == 2
        after = pg_trained.full_list()
        assert after["run_id"].unique().to_list() == [result.run_id]
        assert after.drop("run_id").equals(before.drop("run_id"))
        assert pg_trained.run(result.run_id)["status"] == "succeeded"
        return

    failed = [run for run in pg_trained.runs() if run["kind"] == "nightly"][-1]
    assert state.is_failed(), state.message
    assert len(killer.killed) == 2 == settings.db_retries + 1, (killer.killed, failed["error"])
    assert _attempts(flow_run_id, "write-list") == 2, failed["error"]
    assert failed["status"] == "failed", failed
    # Recorded on a fresh connection: the one that wrote is gone.
    assert failed["error"].startswith("ListWriteError: writing ")
    assert "the previous list is unchanged" in failed["error"]
    assert "terminating connection due to administrator command" in failed["error"]
    assert failed["n_scored"] == before.height
    assert failed["model_version"] == before["model_version"][0]
    assert pg_trained.full_list().equals(before)


# --------------------------------------------------------------------------------------------
# The process is killed in the middle of the write
# --------------------------------------------------------------------------------------------


def _stall_write(trained: TrainedWarehouse, rank: int) -> None:
    """Make the write stop at ``rank``, after the day's old rows were deleted.

    Rows are written in rank order, so stalling at the last rank leaves all the others
    inserted but uncommitted, and the job's process waiting for the server to finish.
    """
    table = trained.wh["retention_list"].name
    if trained.backend == "sqlite":
        # Long enough (billions of rows) that only the kill ends it.
        trained.execute(
            f"CREATE TRIGGER hardening_stall BEFORE INSERT ON {table} "
            f"WHEN NEW.rank = {rank} BEGIN "
            "SELECT count(*) FROM customers a, customers b, customers c; END"
        )
        return
    trained.execute(
        "CREATE FUNCTION hardening_stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.rank = {rank} THEN PERFORM pg_sleep(600); END IF; RETURN NEW; END $$",
        f"CREATE TRIGGER hardening_stall BEFORE INSERT ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION hardening_stall()",
        # The server notices a vanished client within a second even inside a long statement
        # (docs/operations.md recommends this setting for the job's role). It can only see
        # the client go once it has read everything the client sent: hence the last rank.
        f'ALTER DATABASE "{trained.database}" SET client_connection_check_interval = 250',
    )


def _unstall_write(trained: TrainedWarehouse) -> None:
    table = trained.wh["retention_list"].name
    if trained.backend == "sqlite":
        trained.execute("DROP TRIGGER hardening_stall")
    else:
        trained.execute(
            f"DROP TRIGGER hardening_stall ON {table}", "DROP FUNCTION hardening_stall()"
        )


def _wait_for_the_stalled_write(trained: TrainedWarehouse, job: JobProcess) -> int | None:
    """Block until the job is inside the write; the server pid of its session (PostgreSQL)."""

    def running_run() -> bool:
        return any(run["status"] == "running" and run["pid"] == job.pid for run in trained.runs())

    def alive(condition: Callable[[], T]) -> Callable[[], T]:
        def check() -> T:
            if job.process.poll() is not None:
                raise AssertionError(f"the job ended early:\n{job.output[-3000:]}")
            return condition()

        return check

    if trained.backend == "sqlite":
        journal = Path(f"{trained.database}-journal")
        # The run's start is committed first; the next write transaction is the list's.
        wait_until(alive(running_run), timeout=120, what="the run to start")
        wait_until(alive(journal.exists), timeout=120, what="the write")
        return None
    admin = trained.admin()
    try:
        pids = wait_until(
            alive(
                lambda: waiting_backends(
                    admin, trained.database, wait_event_type="Timeout", wait_event="PgSleep"
                )
            ),
            timeout=120,
            what="the write to stall",
        )
    finally:
        admin.dispose()
    assert running_run()
    return int(pids[0])


def test_process_killed_mid_write_leaves_no_partial_list_and_is_marked_abandoned(
    trained: TrainedWarehouse, job_pool: JobPool
) -> None:
    before = trained.full_list()
    _stall_write(trained, rank=before.height)
    with job_pool.run(AS_OF, settings_env(trained.settings)) as job:
        backend_pid = _wait_for_the_stalled_write(trained, job)
        job.kill()
    assert job.process.returncode == -9

    if backend_pid is not None:
        # The server sees the client gone and rolls the transaction back.
        admin = trained.admin()
        try:
            wait_until(
                lambda: not backend_exists(admin, backend_pid),
                timeout=30,
                what="the server to end the dead job's session",
            )
        finally:
            admin.dispose()
    _unstall_write(trained)

    # Nothing of the new list is visible: the day still has exactly the previous list.
    assert trained.full_list().equals(before)
    orphans = [run for run in trained.runs() if run["pid"] == job.pid]
    assert [run["status"] for run in orphans] == ["running"]
    orphan = orphans[0]["run_id"]

    # The next run marks the orphan abandoned (its process is gone), gets the day's lock
    # (the dead process's lock went with it) and replaces the list.
    result = score_day(trained.settings, AS_OF)
    assert result.status == "succeeded"
    abandoned = trained.run(orphan)
    assert abandoned["status"] == "abandoned"
    assert f"process {job.pid}" in abandoned["error"]
    assert abandoned["finished_at"] is not None
    after = trained.full_list()
    assert after["run_id"].unique().to_list() == [result.run_id]
    assert after.drop("run_id").equals(before.drop("run_id"))


# --------------------------------------------------------------------------------------------
# The command line when the warehouse is down or too new
# --------------------------------------------------------------------------------------------


def _cli_env() -> dict[str, str]:
    """The environment of ``retention`` run by cron or an operator (Prefect logging as shipped)."""
    env = job_env({}, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_LOGGING_LEVEL", None)
    env.pop("PREFECT_API_URL", None)
    return env


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(RETENTION), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_cli_env(),
        cwd=tempfile.gettempdir(),
    )


def _one_line_error(command: subprocess.Popen[str]) -> tuple[str, str]:
    """The single ``error:`` line a failed command printed, and everything it printed."""
    stdout, stderr = command.communicate(timeout=180)
    output = stdout + stderr
    assert command.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: "), output
    return lines[0], output


def test_warehouse_down_at_start_is_one_clear_line_and_a_failed_exit(tmp_path: Path) -> None:
    password = "Hardening-Down-Pw"
    server = f"postgresql+psycopg://retention:{password}@127.0.0.1:1/crm"
    missing = f"sqlite:///{tmp_path / 'no-such-directory' / 'warehouse.db'}"
    day = AS_OF.isoformat()
    commands = [_cli("score", "--as-of", day, "--warehouse", url) for url in (server, missing)]

    line, output = _one_line_error(commands[0])
    assert line.startswith("error: cannot reach the warehouse at "), line
    assert "127.0.0.1" in line and "port 1" in line and "Connection refused" in line
    assert_secret_absent(password, output, "the command line output")

    line, _ = _one_line_error(commands[1])
    assert line.startswith("error: cannot reach the warehouse at "), line
    assert "no-such-directory" in line


def test_output_tables_newer_than_the_release_stop_the_run_before_it_starts(
    sqlite_trained: TrainedWarehouse,
) -> None:
    version_table = sqlite_trained.wh["schema_version"].name
    sqlite_trained.execute(
        f"INSERT INTO {version_table} (version, applied_at) VALUES (:v, CURRENT_TIMESTAMP)",
        params={"v": SCHEMA_VERSION + 1},
    )
    runs_before = sqlite_trained.runs()
    day = AS_OF.isoformat()
    result = CliRunner().invoke(app, ["score", "--as-of", day, "--warehouse", sqlite_trained.url])
    # One line and exit 1, raised before any flow run or scoring_runs row exists.
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this release" in lines[0]
    assert "upgrade retention-risk" in lines[0]
    assert sqlite_trained.runs() == runs_before
    assert sqlite_trained.full_list()["run_id"].unique().to_list() == [
        sqlite_trained.previous_run_id
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_a_tampered_champion_fails_the_run_and_keeps_the_previous_list(
    trained: TrainedWarehouse,
) -> None:
    registry = trained.wh["model_registry"]
    before = trained.full_list()
    engine = engine_for(trained.settings)
    try:
        with engine.begin() as conn:
            version, booster = conn.execute(
                sa.select(registry.c.model_version, registry.c.booster).where(
                    registry.c.status == "champion"
                )
            ).one()
            conn.execute(
                sa.update(registry)
                .where(registry.c.model_version == version)
                .values(booster=booster[: len(booster) // 2])
            )
    finally:
        engine.dispose()

    day = AS_OF.isoformat()
    result = CliRunner().invoke(app, ["score", "--as-of", day, "--warehouse", trained.url])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert last.startswith(f"error: model {version}: booster SHA-256 "), result.output
    assert "altered or truncated" in last
    failed = [run for run in trained.runs() if run["kind"] == "nightly"][-1]
    assert failed["status"] == "failed"
    assert failed["error"].startswith(f"ModelIntegrityError: model {version}: "), failed["error"]
    assert failed["model_version"] is None
    assert trained.full_list().equals(before)
