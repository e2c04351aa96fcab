"""The per-as_of run lock: one run per day across connections and processes."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from warehouse.db import engine_for, engine_for_url
from warehouse.migrate import init_db
from warehouse.outputs import LOCK_KEEPALIVE, RunInProgress, as_of_lock, start_run
from warehouse.schema import Warehouse, build_warehouse
from warehouse.settings import Settings

AS_OF = date(2026, 11, 20)
ROOT = Path(__file__).resolve().parents[2]


def test_a_second_holder_is_refused_and_other_days_are_free(
    engine: sa.Engine, wh: Warehouse, settings: Settings
) -> None:
    other_engine = engine_for(settings)  # a second pool: separate connections
    try:
        with as_of_lock(engine, wh, AS_OF):
            # The run started inside the lock is named as its holder.
            run_id = start_run(engine, wh, kind="nightly", as_of=AS_OF)
            with pytest.raises(RunInProgress) as info, as_of_lock(other_engine, wh, AS_OF):
                pytest.fail("the second holder got the lock")
            message = str(info.value)
            assert message.startswith("another run for 2026-11-20 is in progress (")
            assert f"run {run_id}" in message
            assert info.value.as_of == AS_OF
            with as_of_lock(other_engine, wh, AS_OF + timedelta(days=1)):
                pass
        # Released: the next run may take it.
        with as_of_lock(other_engine, wh, AS_OF):
            pass
    finally:
        other_engine.dispose()


def test_the_lock_is_released_when_the_block_fails(engine: sa.Engine, wh: Warehouse) -> None:
    with pytest.raises(ZeroDivisionError), as_of_lock(engine, wh, AS_OF):
        _ = 1 / 0
    with as_of_lock(engine, wh, AS_OF):
        pass


@contextmanager
def holder_process(url: str, as_of: date) -> Iterator[tuple[subprocess.Popen[str], str]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.scoring.lock_holder", url, as_of.isoformat()],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.startswith("locked "):
            _, err = child.communicate(timeout=30)
            pytest.fail(f"lock holder did not start: {line!r} {err[-2000:]}")
        yield child, line.split()[1]
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)


def acquire_within(engine: sa.Engine, wh: Warehouse, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with as_of_lock(engine, wh, AS_OF):
                return
        except RunInProgress:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_another_process_holds_the_day_until_it_dies(
    engine: sa.Engine, wh: Warehouse, settings: Settings
) -> None:
    with holder_process(settings.url, AS_OF) as (child, run_id):
        with pytest.raises(RunInProgress) as info, as_of_lock(engine, wh, AS_OF):
            pytest.fail("got a lock another process holds")
        assert f"run {run_id}" in str(info.value)
        assert f"pid {child.pid}" in str(info.value)
        with as_of_lock(engine, wh, AS_OF + timedelta(days=1)):
            pass
        # Killed outright, the holder's session (PostgreSQL) or file lock (SQLite) ends.
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        acquire_within(engine, wh, 10)


def test_in_memory_sqlite_locks_within_the_process() -> None:
    engine = engine_for_url("sqlite://")
    wh = build_warehouse(Settings(warehouse_url="sqlite://"))  # type: ignore[arg-type]
    init_db(engine, wh)
    with (
        as_of_lock(engine, wh, AS_OF, run_id="r1"),
        pytest.raises(RunInProgress, match="run r1"),
        as_of_lock(engine, wh, AS_OF),
    ):
        pass
    with as_of_lock(engine, wh, AS_OF):
        pass
    engine.dispose()


def test_the_sqlite_lock_file_is_removed_after_the_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = engine_for_url(url)
    wh = build_warehouse(Settings(warehouse_url=url))  # type: ignore[arg-type]
    init_db(engine, wh)
    with as_of_lock(engine, wh, AS_OF):
        assert [p.name for p in tmp_path.glob("*.lock")] == ["w.db.retention_list.2026-11-20.lock"]
    assert not list(tmp_path.glob("*.lock"))
    engine.dispose()


def _keepalive_seconds(server_port: int, client_port: int) -> int | None:
    """The kernel's keepalive timer of the server's socket for one client port, if shown."""
    shown = subprocess.run(
        [
            "ss",
            "-tnoH",
            "state",
            "established",
            f"( sport = :{server_port} and dport = :{client_port} )",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    timer = re.search(r"timer:\(keepalive,(?:(\d+)min)?(?:(\d+)(?:\.\d+)?sec)?", shown)
    if timer is None:
        return None  # another timer runs just now (data in flight)
    return int(timer.group(1) or 0) * 60 + int(timer.group(2) or 0)


@pytest.mark.postgres
def test_the_lock_session_is_dropped_soon_after_its_host_vanishes(
    pg_url: str, make_settings: Callable[..., Settings]
) -> None:
    """The server's socket of the lock session probes its client after 30 s of silence, not
    after the server's default (2 hours here): seen in the kernel's keepalive timer."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to read the server socket's keepalive timer")
    settings = make_settings(pg_url)
    engine = engine_for(settings)
    try:
        wh = build_warehouse(settings)
        init_db(engine, wh)
        with as_of_lock(engine, wh, AS_OF):
            run_id = start_run(engine, wh, kind="nightly", as_of=AS_OF)
            with engine.connect() as conn:
                client_port = conn.execute(
                    sa.text("SELECT client_port FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": f"retention-risk run {run_id}"},
                ).scalar_one()
            deadline = time.monotonic() + 5
            seconds = _keepalive_seconds(engine.url.port or 5432, client_port)
            while seconds is None and time.monotonic() < deadline:
                time.sleep(0.1)
                seconds = _keepalive_seconds(engine.url.port or 5432, client_port)
    finally:
        engine.dispose()
    assert seconds is not None, "no keepalive timer on the lock session's server socket"
    assert seconds <= int(LOCK_KEEPALIVE["tcp_keepalives_idle"])
