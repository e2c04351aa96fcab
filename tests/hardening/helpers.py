"""Separate processes and PostgreSQL session tools for the hardening tests.

Entry point, a nightly run in a process of its own (plain Python, no Prefect engine), with
its settings from ``RETENTION_*`` environment variables like a scheduled job::

    python -m tests.hardening.helpers score 2026-03-01

It prints ``started <pid>`` at once and one result line at the end:
``succeeded <run_id>`` (exit 0), ``refused <message>`` (exit 3: another run holds the
day) or ``failed <Type>: <message>`` (exit 1).

``python -m tests.hardening.helpers serve`` is the same process started ahead of time:
it imports the job, prints ``ready``, then reads one JSON line
``{"as_of": "2026-03-01", "env": {"RETENTION_WAREHOUSE_URL": ...}}`` from stdin and runs
exactly like ``score``. Importing the job takes about ten seconds of CPU on a busy
2-core machine; :class:`JobPool` pays it while other tests run.

The rest are tools the tests use from the outside: find the backend a run is waiting in
(``pg_stat_activity``), terminate it as a network failure or an administrator would, and
hold table or row locks from another session so a run blocks at a known point, and write
to a SQLite file from another process as a loader would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]

EXIT_REFUSED = 3
"""Exit code of the entry point when another run holds the day."""


# --------------------------------------------------------------------------------------------
# The separate nightly process
# --------------------------------------------------------------------------------------------


def _score(as_of_text: str) -> int:
    from flows.nightly import score_day
    from warehouse.outputs import RunInProgress
    from warehouse.settings import Settings, mask_secrets

    print(f"started {os.getpid()}", flush=True)
    settings = Settings()
    try:
        result = score_day(settings, date.fromisoformat(as_of_text))
    except RunInProgress as exc:
        print(f"refused {exc}", flush=True)
        return EXIT_REFUSED
    except Exception as exc:
        print(f"failed {type(exc).__name__}: {mask_secrets(str(exc))}", flush=True)
        return 1
    print(f"succeeded {result.run_id}", flush=True)
    return 0


def _serve() -> int:
    import flows.nightly
    import warehouse.outputs

    del flows.nightly, warehouse.outputs
    print("ready", flush=True)
    request = json.loads(sys.stdin.readline())
    for key in [k for k in os.environ if k.startswith("RETENTION_")]:
        del os.environ[key]
    os.environ.update(request["env"])
    return _score(request["as_of"])


def main(argv: list[str]) -> int:
    """``score AS_OF`` or ``serve``: one nightly run; see the module docs for the output."""
    if argv == ["serve"]:
        return _serve()
    if len(argv) != 2 or argv[0] != "score":
        print("usage: python -m tests.hardening.helpers score YYYY-MM-DD | serve", file=sys.stderr)
        return 2
    return _score(argv[1])


def job_env(settings_values: Mapping[str, str], **extra: str) -> dict[str, str]:
    """This environment with the job's ``RETENTION_*`` settings (and ``extra``) set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    env.update(settings_values)
    env.update(extra)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


@dataclass
class JobProcess:
    """A nightly run in a separate process; its output lines are collected as they come."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)
    _reader: threading.Thread | None = None

    @classmethod
    def serve(cls) -> JobProcess:
        """Start a process that imports the job and waits for :meth:`run`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return cls._spawn(["serve"], env, stdin=subprocess.PIPE)

    @classmethod
    def _spawn(cls, args: list[str], env: Mapping[str, str], stdin: int | None) -> JobProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.hardening.helpers", *args],
            cwd=ROOT,
            env=dict(env),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        job = cls(process)
        job._reader = threading.Thread(target=job._read, daemon=True)
        job._reader.start()
        return job

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith(("ready", "started ")):
                self.ready.set()
        self.ready.set()

    def run(self, as_of: date, env: Mapping[str, str]) -> JobProcess:
        """Give a serving process its day and settings; it starts the run at once."""
        if not self.ready.wait(timeout=180) or self.process.poll() is not None:
            raise AssertionError(f"job process did not get ready:\n{self.output[-3000:]}")
        assert self.process.stdin is not None
        settings = {k: v for k, v in env.items() if k.startswith("RETENTION_")}
        request = {"as_of": as_of.isoformat(), "env": settings}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.close()
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float = 120) -> int:
        """Wait for the process to end; its exit code."""
        code = self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def result_line(self) -> str:
        """The last line that reports how the run ended."""
        for line in reversed(self.lines):
            if line.startswith(("succeeded ", "refused ", "failed ")):
                return line
        raise AssertionError(f"no result line from pid {self.pid}:\n{self.output[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a lost node would: no cleanup in the process."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.wait(timeout=30)

    def __enter__(self) -> JobProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class JobPool:
    """Job processes started ahead of time (see ``serve`` in the module docs)."""

    def __init__(self) -> None:
        self._idle: list[JobProcess] = []
        self._lock = threading.Lock()

    def reserve(self, count: int) -> None:
        """Have at least ``count`` processes starting or waiting."""
        with self._lock:
            self._idle = [job for job in self._idle if job.process.poll() is None]
            while len(self._idle) < count:
                self._idle.append(JobProcess.serve())

    def take(self) -> JobProcess:
        """A process that has imported the job and waits for :meth:`JobProcess.run`."""
        with self._lock:
            job = self._idle.pop(0) if self._idle else JobProcess.serve()
        if not job.ready.wait(timeout=180) or job.process.poll() is not None:
            job.kill()
            raise AssertionError(f"job process did not get ready:\n{job.output[-3000:]}")
        return job

    def run(self, as_of: date, env: Mapping[str, str]) -> JobProcess:
        """A process running the nightly job for ``as_of`` with the ``RETENTION_*`` ``env``."""
        return self.take().run(as_of, env)

    def close(self) -> None:
        """Stop the processes nobody took."""
        with self._lock:
            idle, self._idle = self._idle, []
        for job in idle:
            job.kill()


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def assert_secret_absent(secret: str, text: object, where: str) -> None:
    """Fail, quoting the spot, when ``secret`` occurs in ``text`` (or its ``repr``)."""
    rendered = text if isinstance(text, str) else repr(text)
    position = rendered.find(secret)
    if position >= 0:
        excerpt = rendered[max(0, position - 200) : position + len(secret) + 40]
        raise AssertionError(f"the password appears in {where}: ...{excerpt}...")


# --------------------------------------------------------------------------------------------
# PostgreSQL sessions seen from the outside
# --------------------------------------------------------------------------------------------


def admin_engine(url: str) -> sa.Engine:
    """An autocommit engine (the test's own administrator sessions)."""
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def waiting_backends(
    admin: sa.Engine, database: str, *, wait_event_type: str, wait_event: str | None = None
) -> list[int]:
    """Server pids of sessions on ``database`` that wait on ``wait_event_type`` (and event)."""
    query = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = :database "
        "AND wait_event_type = :wait_event_type "
        "AND (CAST(:wait_event AS text) IS NULL OR wait_event = :wait_event) "
        "AND pid <> pg_backend_pid() ORDER BY backend_start"
    )
    with admin.connect() as conn:
        rows = conn.execute(
            query,
            {"database": database, "wait_event_type": wait_event_type, "wait_event": wait_event},
        )
        return [int(row[0]) for row in rows]


def backend_exists(admin: sa.Engine, pid: int) -> bool:
    """Whether a server process ``pid`` still runs."""
    with admin.connect() as conn:
        found = conn.execute(
            sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        ).first()
    return found is not None


def terminate_backend(admin: sa.Engine, pid: int) -> bool:
    """``pg_terminate_backend(pid)``: the session ends as if the network dropped it."""
    with admin.connect() as conn:
        return bool(conn.execute(sa.select(sa.func.pg_terminate_backend(pid))).scalar_one())


@contextmanager
def holding(
    url: str, *statements: str, params: Mapping[str, Any] | None = None
) -> Iterator[sa.Connection]:
    """A session that runs ``statements`` in an open transaction and keeps its locks.

    The transaction is rolled back, releasing the locks, when the block ends (or earlier,
    by ``conn.rollback()``).
    """
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    conn = engine.connect()
    try:
        for statement in statements:
            conn.execute(sa.text(statement), dict(params or {}))
        yield conn
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()
            engine.dispose()


class BackendKiller(threading.Thread):
    """Terminates every session on a database that waits for a lock, ``times`` times.

    Run it while another session (see :func:`holding`) holds the lock the job needs: each
    attempt of the job blocks on it and is terminated, like a connection dropped by the
    network. ``before_first`` runs just before the first termination. After ``times``
    terminations ``release`` is called (e.g. the lock holder rolls back) and the thread
    stops; with ``times=None`` it goes on until :meth:`stop`.
    """

    def __init__(
        self,
        admin: sa.Engine,
        database: str,
        *,
        times: int | None,
        release: Callable[[], None] | None = None,
        before_first: Callable[[], None] | None = None,
        wait_event_type: str = "Lock",
    ) -> None:
        super().__init__(name=f"killer-{database}", daemon=True)
        self.admin = admin
        self.database = database
        self.times = times
        self.release = release
        self.before_first = before_first
        self.wait_event_type = wait_event_type
        self.killed: list[int] = []
        self.errors: list[BaseException] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for pid in waiting_backends(
                    self.admin, self.database, wait_event_type=self.wait_event_type
                ):
                    if self.before_first is not None and not self.killed:
                        self.before_first()
                    if terminate_backend(self.admin, pid):
                        self.killed.append(pid)
                    if self.times is not None and len(self.killed) >= self.times:
                        if self.release is not None:
                            self.release()
                        return
                self._stop_event.wait(0.02)
        except BaseException as exc:
            self.errors.append(exc)

    def stop(self) -> None:
        """Stop terminating sessions and wait for the thread."""
        self._stop_event.set()
        self.join(timeout=30)
        if self.errors:
            raise self.errors[0]


_SQLITE_WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
try:
    conn.execute("BEGIN IMMEDIATE")
    for statement in sys.argv[3:]:
        conn.execute(statement)
    conn.execute("COMMIT")
    print("committed")
except sqlite3.OperationalError as error:
    print(error)
"""


def write_from_another_process(
    database: str, statements: Sequence[str] = (), *, timeout: float
) -> str:
    """Take the write lock of a SQLite file in another process, run ``statements`` and
    commit, waiting up to ``timeout`` seconds for locks: ``'committed'`` or the error."""
    done = subprocess.run(
        [sys.executable, "-c", _SQLITE_WRITER, database, str(timeout), *statements],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
