"""A separate process that holds the as_of lock until its stdin closes (for the lock tests).

Usage: python -m tests.scoring.lock_holder WAREHOUSE_URL AS_OF
Prints ``locked <run_id> <pid>`` once it holds the lock; exits 3 with ``refused <message>``
when another run holds it.
"""

from __future__ import annotations

import sys
from datetime import date

from warehouse.db import engine_for
from warehouse.outputs import RunInProgress, as_of_lock, start_run
from warehouse.schema import build_warehouse
from warehouse.settings import Settings


def main(url: str, as_of_text: str) -> int:
    settings = Settings(warehouse_url=url)  # type: ignore[arg-type]
    engine = engine_for(settings)
    wh = build_warehouse(settings)
    as_of = date.fromisoformat(as_of_text)
    try:
        with as_of_lock(engine, wh, as_of):
            run_id = start_run(engine, wh, kind="nightly", as_of=as_of)
            print(f"locked {run_id}", flush=True)
            sys.stdin.read()
    except RunInProgress as exc:
        print(f"refused {exc}", flush=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
