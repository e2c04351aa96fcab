"""Write-back on SQLite and PostgreSQL: atomic replace, run records, abandoned runs, reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta

import polars as pl
import pytest
import sqlalchemy as sa

from models.prioritise import PrioritySettings, prioritise
from warehouse.db import engine_for
from warehouse.migrate import init_db
from warehouse.outputs import (
    DayLockLost,
    ListRowsError,
    ListWriteError,
    RunSummary,
    as_of_lock,
    build_list_rows,
    fail_run,
    finish_run,
    heartbeat,
    latest_runs,
    mark_abandoned_runs,
    pid_scope,
    read_retention_list,
    replace_retention_list,
    start_run,
    utc_now,
    validate_list_rows,
)
from warehouse.schema import Warehouse, build_warehouse, polars_schema
from warehouse.settings import Settings

AS_OF = date(2026, 11, 20)


def list_rows(
    run_id: str, *, as_of: date = AS_OF, n: int = 12, capacity: int = 5, shift: float = 0.0
) -> pl.DataFrame:
    """A day's retention_list rows for ``n`` customers, reasons for the listed ones."""
    scored = pl.DataFrame(
        {
            "customer_id": list(range(1, n + 1)),
            "churn_probability": [round(((7 * i) % n) / n + shift, 4) % 1.0 for i in range(n)],
            "segment": [["smb", "enterprise", None][i % 3] for i in range(n)],
            "customer_value": [None if i % 5 == 0 else 10.0 + i for i in range(n)],
        },
        schema={
            "customer_id": pl.Int64,
            "churn_probability": pl.Float64,
            "segment": pl.String,
            "customer_value": pl.Float64,
        },
    )
    prioritised = prioritise(
        scored, pl.DataFrame({"customer_id": [2]}), PrioritySettings(capacity=capacity)
    )
    listed = prioritised.listed_customer_ids
    reasons = pl.DataFrame(
        {
            "customer_id": listed,
            "reason_source": ["exact"] * len(listed),
            "reason_1_code": ["open_complaints"] * len(listed),
            "reason_1": [f"{i % 3 + 1} complaints still open" for i in listed],
            "reason_2_code": ["contacts_30d"] * len(listed),
            "reason_2": ["4 contacts with us in the last 30 days"] * len(listed),
            "action_code": ["resolve_and_call_back"] * len(listed),
            "recommended_action": ["Resolve the open complaint and call back today."] * len(listed),
        }
    )
    return build_list_rows(
        prioritised.frame, reasons, as_of=as_of, model_version="m-1", run_id=run_id
    )


def written(engine: sa.Engine, wh: Warehouse, as_of: date = AS_OF) -> pl.DataFrame:
    return read_retention_list(engine, wh, as_of=as_of, listed_only=False)


def install_failing_trigger(engine: sa.Engine, customer_id: int) -> None:
    """A real database trigger that aborts the insert of one customer's row."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(
                "CREATE FUNCTION fail_one_row() RETURNS trigger LANGUAGE plpgsql AS $$ "
                f"BEGIN IF NEW.customer_id = {customer_id} THEN "
                "RAISE EXCEPTION 'injected failure for customer %%', NEW.customer_id; "
                "END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER fail_one_row BEFORE INSERT ON retention_list "
                "FOR EACH ROW EXECUTE FUNCTION fail_one_row()"
            )
        else:
            conn.exec_driver_sql(
                "CREATE TRIGGER fail_one_row BEFORE INSERT ON retention_list "
                f"WHEN NEW.customer_id = {customer_id} "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
            )


def run_row(engine: sa.Engine, wh: Warehouse, run_id: str) -> dict[str, object]:
    runs = latest_runs(engine, wh, limit=100)
    return runs.filter(pl.col("run_id") == run_id).row(0, named=True)


def test_replace_twice_gives_identical_rows_and_no_duplicates(
    engine: sa.Engine, wh: Warehouse
) -> None:
    first_run = start_run(engine, wh, kind="score", as_of=AS_OF)
    rows = list_rows(first_run)
    assert replace_retention_list(engine, wh, AS_OF, rows, first_run) == rows.height
    first = written(engine, wh)
    assert first.schema == polars_schema(wh["retention_list"])
    assert first.equals(rows)  # the round trip keeps every value and type

    second_run = start_run(engine, wh, kind="score", as_of=AS_OF)
    replace_retention_list(engine, wh, AS_OF, list_rows(second_run), second_run)
    second = written(engine, wh)
    assert second.height == rows.height
    assert second["customer_id"].n_unique() == rows.height
    assert second.drop("run_id").equals(first.drop("run_id"))
    assert set(second["run_id"]) == {second_run}
    assert sorted(second["rank"]) == list(range(1, rows.height + 1))


def test_other_days_are_untouched_by_a_replace(engine: sa.Engine, wh: Warehouse) -> None:
    other = AS_OF - timedelta(days=1)
    replace_retention_list(engine, wh, other, list_rows("r0", as_of=other), "r0")
    replace_retention_list(engine, wh, AS_OF, list_rows("r1"), "r1")
    replace_retention_list(engine, wh, AS_OF, list_rows("r2", n=4, capacity=2), "r2")
    assert written(engine, wh).height == 4
    assert written(engine, wh, other).equals(list_rows("r0", as_of=other))


def test_a_failure_during_the_write_leaves_the_previous_list(
    engine: sa.Engine, wh: Warehouse
) -> None:
    good_run = start_run(engine, wh, kind="score", as_of=AS_OF)
    replace_retention_list(engine, wh, AS_OF, list_rows(good_run), good_run)
    before = written(engine, wh)

    install_failing_trigger(engine, customer_id=12)
    bad_run = start_run(engine, wh, kind="score", as_of=AS_OF)
    new_rows = list_rows(bad_run, shift=0.05)
    summary = RunSummary(model_version="m-1", counts={"scored": 12, "listed": 5})
    with pytest.raises(ListWriteError, match="injected failure") as info:
        replace_retention_list(engine, wh, AS_OF, new_rows, bad_run, summary=summary)

    # The delete and the rows inserted before the failure were rolled back.
    assert written(engine, wh).equals(before)
    assert run_row(engine, wh, bad_run)["status"] == "running"
    fail_run(engine, wh, bad_run, error=info.value, timings={"score": 0.1})
    failed = run_row(engine, wh, bad_run)
    assert failed["status"] == "failed"
    assert "ListWriteError" in str(failed["error"])
    assert "previous list is unchanged" in str(failed["error"])
    assert failed["finished_at"] is not None
    assert json.loads(str(failed["timings"])) == {"score": 0.1}


def test_an_interrupted_run_records_what_interrupted_it(engine: sa.Engine, wh: Warehouse) -> None:
    run_id = start_run(engine, wh, kind="score", as_of=AS_OF)
    fail_run(engine, wh, run_id, error=KeyboardInterrupt())
    assert run_row(engine, wh, run_id)["error"] == "KeyboardInterrupt"


def test_the_run_record_commits_with_the_list(engine: sa.Engine, wh: Warehouse) -> None:
    run_id = start_run(engine, wh, kind="score", as_of=AS_OF)
    summary = RunSummary(
        model_version="m-1",
        counts={"n_scored": 12, "n_listed": 5, "n_quarantined": 3, "n_cooled_down": 1},
        timings={"score": 0.5},
        data_quality={"quarantined": {"interactions": 3}, "as_of": AS_OF},
        drift={"psi_max": 0.02, "psi": {"tenure_days": float("nan")}},
    )
    replace_retention_list(engine, wh, AS_OF, list_rows(run_id), run_id, summary=summary)
    run = run_row(engine, wh, run_id)
    assert run["status"] == "succeeded"
    assert (run["n_scored"], run["n_listed"], run["n_quarantined"], run["n_cooled_down"]) == (
        12,
        5,
        3,
        1,
    )
    timings = json.loads(str(run["timings"]))
    assert timings["score"] == 0.5 and timings["write"] >= 0
    assert json.loads(str(run["data_quality"]))["as_of"] == "2026-11-20"
    assert json.loads(str(run["drift"])) == {"psi_max": 0.02, "psi": {"tenure_days": None}}

    # A summary for a run that was never started rolls the whole write back.
    with pytest.raises(LookupError, match="no run"):
        replace_retention_list(
            engine, wh, AS_OF, list_rows("ghost", n=3, capacity=1), "ghost", summary=summary
        )
    assert written(engine, wh).height == 12


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda f: f.drop("priority"), "missing column"),
        (lambda f: f.with_columns(colour=pl.lit("red")), "unexpected column"),
        (lambda f: f.with_columns(as_of=pl.lit(date(2026, 1, 1))), "12 rows are not for"),
        (lambda f: f.with_columns(run_id=pl.lit("other")), "are not run"),
        (
            lambda f: f.with_columns(
                churn_probability=pl.when(pl.col("rank") <= 2)
                .then(None)
                .otherwise(pl.col("churn_probability"))
            ),
            "churn_probability: null in 2 of 12 rows",
        ),
        (lambda f: pl.concat([f, f.tail(1)]), "1 of 13 rows repeat a customer"),
        (lambda f: f.with_columns(rank=pl.col("rank") * 2), "not a permutation"),
        (lambda f: f.with_columns(segment=pl.lit("x" * 65)), "longer than 64"),
        (lambda f: f.with_columns(priority=pl.lit("urgent")), "priority"),
        (lambda f: f.with_columns(rank=pl.lit("first")), "cannot be stored"),
    ],
)
def test_rows_that_do_not_fit_are_refused(mangle: object, message: str) -> None:
    table = build_warehouse(Settings())["retention_list"]
    bad = mangle(list_rows("r2"))  # type: ignore[operator]
    with pytest.raises(ListRowsError, match=message) as info:
        validate_list_rows(bad, table, as_of=AS_OF, run_id="r2")
    assert "retention_list" in str(info.value)


def test_refused_rows_change_nothing(engine: sa.Engine, wh: Warehouse) -> None:
    replace_retention_list(engine, wh, AS_OF, list_rows("r1"), "r1")
    before = written(engine, wh)
    bad = list_rows("r2").with_columns(priority=pl.lit(None, dtype=pl.String))
    with pytest.raises(ListRowsError, match="priority: null in 12 of 12 rows"):
        replace_retention_list(engine, wh, AS_OF, bad, "r2")
    assert written(engine, wh).equals(before)


def test_build_list_rows_marks_unexplained_customers() -> None:
    rows = list_rows("r1")
    unlisted = rows.filter(~pl.col("listed"))
    assert set(unlisted["reason_source"]) == {"none"}
    assert unlisted.select(pl.col("reason_1", "action_code").null_count()).row(0) == (
        unlisted.height,
        unlisted.height,
    )
    listed = rows.filter("listed")
    assert set(listed["reason_source"]) == {"exact"}
    assert listed["reason_3"].null_count() == listed.height
    with pytest.raises(ListRowsError, match="not scored"):
        build_list_rows(
            rows.select(
                "customer_id",
                "rank",
                "listed",
                "churn_probability",
                "value_at_risk",
                "customer_value",
                "priority",
                "segment",
                "cooled_down",
            ).head(3),
            pl.DataFrame({"customer_id": [999], "reason_source": ["exact"]}),
            as_of=AS_OF,
            model_version="m",
            run_id="r",
        )


def test_read_retention_list_filters(engine: sa.Engine, wh: Warehouse) -> None:
    assert read_retention_list(engine, wh).height == 0
    older = AS_OF - timedelta(days=3)
    replace_retention_list(engine, wh, older, list_rows("r0", as_of=older, n=20), "r0")
    replace_retention_list(engine, wh, AS_OF, list_rows("r1", capacity=6), "r1")
    latest = read_retention_list(engine, wh)
    assert set(latest["as_of"]) == {AS_OF}
    assert latest.height == 6 and latest["listed"].all()
    assert latest["rank"].to_list() == sorted(latest["rank"].to_list())
    assert read_retention_list(engine, wh, top=2)["rank"].to_list() == latest["rank"][:2].to_list()
    smb = read_retention_list(engine, wh, segment="smb", listed_only=False)
    assert set(smb["segment"]) == {"smb"} and smb.height == 4
    assert read_retention_list(engine, wh, as_of=older, listed_only=False).height == 20


def test_run_lifecycle_and_masked_errors(
    engine: sa.Engine, wh: Warehouse, settings: Settings
) -> None:
    run_id = start_run(engine, wh, kind="score", as_of=AS_OF)
    run = run_row(engine, wh, run_id)
    assert run["status"] == "running" and run["pid"] == os.getpid()
    assert run["pid_scope"] == pid_scope()
    assert run["started_at"].tzinfo is not None  # type: ignore[union-attr]
    assert heartbeat(engine, wh, run_id)
    finish_run(
        engine,
        wh,
        run_id,
        model_version="m-1",
        counts={"scored": 10, "listed": 2, "cooled_down": 0},
        timings={"score": 1.25},
        data_quality={"rows": 10},
    )
    done = run_row(engine, wh, run_id)
    assert done["status"] == "succeeded" and done["n_scored"] == 10 and done["error"] is None
    fail_run(engine, wh, run_id, error="raised after the list was committed")
    assert run_row(engine, wh, run_id)["status"] == "succeeded"
    assert not heartbeat(engine, wh, run_id)  # a finished run has no heartbeat

    failing = start_run(engine, wh, kind="backfill", as_of=None)
    fail_run(
        engine,
        wh,
        failing,
        error="cannot connect to postgresql://scorer:s3cret-pw@db.internal/warehouse "
        "(host=db.internal password=s3cret-pw)",
    )
    failed = run_row(engine, wh, failing)
    assert failed["status"] == "failed"
    assert "s3cret-pw" not in str(failed["error"])
    assert "scorer:***@db.internal" in str(failed["error"])
    with pytest.raises(LookupError):
        fail_run(engine, wh, "no-such-run", error="x")
    with pytest.raises(ValueError, match="kind"):
        start_run(engine, wh, kind="a-very-long-kind-name", as_of=None)
    assert latest_runs(engine, wh, limit=1)["run_id"].to_list() == [failing]


def _exited_pid() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(child.stdout.strip())


def test_mark_abandoned_runs(engine: sa.Engine, wh: Warehouse) -> None:
    # A run recorded for a process of this host that has since exited.
    dead_pid = _exited_pid()
    dead_run = start_run(engine, wh, kind="nightly", as_of=AS_OF)
    runs = wh["scoring_runs"]
    with engine.begin() as conn:
        conn.execute(sa.update(runs).where(runs.c.run_id == dead_run).values(pid=dead_pid))
    # A run whose heartbeat stopped long ago, and a live run of this process.
    stale_run = start_run(engine, wh, kind="score", as_of=AS_OF)
    with engine.begin() as conn:
        conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == stale_run)
            .values(heartbeat_at=utc_now() - timedelta(hours=3), pid=None)
        )
    live_run = start_run(engine, wh, kind="score", as_of=AS_OF)

    assert mark_abandoned_runs(engine, wh, stale_after=timedelta(hours=1)) == 2
    assert run_row(engine, wh, dead_run)["status"] == "abandoned"
    assert "is gone" in str(run_row(engine, wh, dead_run)["error"])
    assert run_row(engine, wh, stale_run)["status"] == "abandoned"
    assert "no heartbeat" in str(run_row(engine, wh, stale_run)["error"])
    assert run_row(engine, wh, live_run)["status"] == "running"
    assert mark_abandoned_runs(engine, wh, stale_after=timedelta(hours=1)) == 0


def test_a_run_of_another_pid_namespace_is_judged_by_its_heartbeat_only(
    engine: sa.Engine, wh: Warehouse
) -> None:
    """Containers can share a host name: a pid that is gone here may run over there."""
    assert pid_scope() is not None, "this test needs Linux's boot id and PID namespaces"
    gone_here = _exited_pid()
    runs = wh["scoring_runs"]
    neighbour = start_run(engine, wh, kind="nightly", as_of=AS_OF)
    local = start_run(engine, wh, kind="nightly", as_of=AS_OF)
    upgraded = start_run(engine, wh, kind="nightly", as_of=AS_OF)
    with engine.begin() as conn:
        for run_id, scope in (
            (neighbour, f"{pid_scope()}-other"),
            (local, pid_scope()),
            (upgraded, None),  # recorded by a release without pid_scope
        ):
            conn.execute(
                sa.update(runs)
                .where(runs.c.run_id == run_id)
                .values(pid=gone_here, pid_scope=scope)
            )

    assert mark_abandoned_runs(engine, wh, stale_after=timedelta(hours=1)) == 1
    assert run_row(engine, wh, local)["status"] == "abandoned"
    assert run_row(engine, wh, neighbour)["status"] == "running"
    assert run_row(engine, wh, upgraded)["status"] == "running"

    with engine.begin() as conn:
        conn.execute(
            sa.update(runs)
            .where(runs.c.run_id == neighbour)
            .values(heartbeat_at=utc_now() - timedelta(hours=2))
        )
    assert mark_abandoned_runs(engine, wh, stale_after=timedelta(hours=1)) == 1
    assert "no heartbeat" in str(run_row(engine, wh, neighbour)["error"])


def test_the_pid_scope_tells_pid_namespaces_apart() -> None:
    """A process in a PID namespace of its own (a container) records another scope."""
    command = [sys.executable, "-c", "from warehouse.outputs import pid_scope; print(pid_scope())"]
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a PID namespace here: {probe.stderr.decode().strip()}")
    inside = subprocess.run(
        ["unshare", "--pid", "--fork", *command], capture_output=True, text=True, check=True
    ).stdout.strip()
    here = pid_scope()
    assert here is not None and inside != "None"
    boot, namespace = here.split("/")
    assert inside.split("/")[0] == boot
    assert inside.split("/")[1] != namespace
    assert namespace.startswith("pid:[")


def test_a_run_without_drift_or_data_quality_stores_sql_null(
    engine: sa.Engine, wh: Warehouse
) -> None:
    """``WHERE drift IS NULL`` finds training runs: no JSON ``null`` stands in for it."""
    run_id = start_run(engine, wh, kind="train", as_of=AS_OF)
    finish_run(engine, wh, run_id, model_version="m-1", timings={"fit": 1.0})
    runs = wh["scoring_runs"]
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(runs.c.run_id).where(
                runs.c.drift.is_(None), runs.c.data_quality.is_(None), runs.c.run_id == run_id
            )
        ).all()
    assert [row.run_id for row in found] == [run_id]


@pytest.mark.postgres
def test_a_run_whose_day_lock_ended_does_not_write(pg_url: str) -> None:
    """The advisory lock lives on an idle session; if that session dies (idle timeout,
    failover, pg_terminate_backend) another run may take the day, so this one must not
    write over it."""
    settings = Settings(warehouse_url=pg_url)  # type: ignore[arg-type]
    engine = engine_for(settings)
    wh = build_warehouse(settings)
    init_db(engine, wh)
    first = start_run(engine, wh, kind="score", as_of=AS_OF)
    replace_retention_list(engine, wh, AS_OF, list_rows(first), first)
    before = written(engine, wh)
    run_id = start_run(engine, wh, kind="score", as_of=AS_OF)
    try:
        with as_of_lock(engine, wh, AS_OF, run_id=run_id):
            with engine.begin() as conn:
                ended = conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name"
                    ),
                    {"name": f"retention-risk run {run_id}"},
                ).all()
            assert ended == [(True,)]
            with pytest.raises(DayLockLost, match=f"lock on {AS_OF} ended before the write"):
                replace_retention_list(engine, wh, AS_OF, list_rows(run_id, shift=0.3), run_id)
        assert written(engine, wh).equals(before)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_host_whose_clock_is_behind_is_not_taken_for_a_dead_run(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starts and heartbeats carry the warehouse's clock, not the host's: a live run on a
    host an hour behind is not marked abandoned by a run on a host with the right time."""
    import warehouse.outputs as outputs

    settings = Settings(warehouse_url=pg_url)  # type: ignore[arg-type]
    engine = engine_for(settings)
    wh = build_warehouse(settings)
    init_db(engine, wh)
    try:
        real_now = outputs.utc_now
        monkeypatch.setattr(outputs, "utc_now", lambda: real_now() - timedelta(hours=1))
        run_id = start_run(engine, wh, kind="score", as_of=AS_OF)
        assert heartbeat(engine, wh, run_id)
        monkeypatch.setattr(outputs, "utc_now", real_now)
        assert mark_abandoned_runs(engine, wh, stale_after=timedelta(minutes=15)) == 0
        run = run_row(engine, wh, run_id)
        assert run["status"] == "running"
        started = run["started_at"]
        assert isinstance(started, datetime)
        assert abs((started - real_now()).total_seconds()) < 60
    finally:
        engine.dispose()
