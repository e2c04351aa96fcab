"""Two schedulers fire at once: two real processes score the same day, exactly one writes.

The test makes the runs overlap for certain: it holds a lock the first run needs after it
took the day's lock (PostgreSQL: the source table ``customers``, so extraction waits;
SQLite: the database's write lock, so recording the run's start waits), starts both
processes, and lets go only after the loser has ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.hardening.conftest import AS_OF, TrainedWarehouse, settings_env
from tests.hardening.helpers import EXIT_REFUSED, JobPool, holding, wait_until


@pytest.fixture(scope="module", autouse=True)
def _jobs_ahead(job_pool: JobPool) -> None:
    """Both backends' job processes start importing while the warehouses are built."""
    job_pool.reserve(4)


@contextmanager
def _first_run_blocks(trained: TrainedWarehouse) -> Iterator[None]:
    """Hold what the day's lock holder needs next, so it waits with the lock held."""
    if trained.backend == "postgres":
        table = trained.wh["customers"].name
        with holding(trained.url, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
            yield
        return
    # A reserved lock: readers go on, every writer (start_run's INSERT) waits.
    engine = sa.create_engine(trained.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.exec_driver_sql("ROLLBACK")
    finally:
        engine.dispose()


def test_two_runs_for_the_same_day_write_once_and_the_other_says_why(
    trained: TrainedWarehouse, job_pool: JobPool
) -> None:
    before = trained.full_list()
    env = settings_env(trained.settings)
    first, second = jobs = [job_pool.take(), job_pool.take()]
    with first, second:  # killed if the test fails half-way
        with _first_run_blocks(trained):
            for job in jobs:
                job.run(AS_OF, env)
            # Nothing can finish while the test holds the lock: whoever ends now lost.
            ended = wait_until(
                lambda: [job for job in jobs if job.process.poll() is not None],
                timeout=180,
                what="one of the two runs to end",
            )
        assert len(ended) == 1, [job.output for job in jobs]
        loser = ended[0]
        winner = second if loser is first else first
        assert winner.wait(timeout=120) == 0, winner.output
        assert loser.wait() == EXIT_REFUSED, loser.output
    winner_run = winner.result_line().removeprefix("succeeded ")
    refusal = loser.result_line()
    assert refusal.startswith(f"refused another run for {AS_OF.isoformat()} is in progress (")
    assert f"pid {winner.pid}" in refusal
    if trained.backend == "postgres":
        # The holder was stopped after recording its run (SQLite: before), so it is named.
        assert f"run {winner_run}" in refusal

    # One run recorded for the two processes, and its list is the day's list.
    new_runs = [
        run
        for run in trained.runs()
        if run["kind"] == "nightly" and run["run_id"] != trained.previous_run_id
    ]
    assert [(run["run_id"], run["status"], run["pid"]) for run in new_runs] == [
        (winner_run, "succeeded", winner.pid)
    ]
    after = trained.full_list()
    assert after["run_id"].unique().to_list() == [winner_run]
    assert after.drop("run_id").equals(before.drop("run_id"))
