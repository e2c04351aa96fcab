"""Benchmark of the demo warehouse generator, optionally with loading into a warehouse.

    python -m bench.demo_data --customers 100000 --days 365
    python -m bench.demo_data --customers 10000 --load-url sqlite:////tmp/demo.db

Prints the seconds taken, rows per table, rows per second and peak resident memory, and
writes the same as JSON to ``bench/results/demo-data-<customers>.json`` (``--output`` to
change it). ``--load-url`` must name an empty warehouse: the source tables are created there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_END = date(2026, 11, 1)


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / (1024 * 1024)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_data", description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--end", type=date.fromisoformat, default=DEFAULT_END, help="history ends before this day"
    )
    parser.add_argument("--load-url", help="also load into this (empty) warehouse and time it")
    parser.add_argument("--output", type=Path, help="JSON result path")
    return parser.parse_args(argv)


def run(
    customers: int, days: int, seed: int, end: date, load_url: str | None = None
) -> dict[str, Any]:
    """Generate (and optionally load) a demo warehouse; return the measurements."""
    from warehouse.demo import generate_demo, monthly_churn_rates

    rss_before = _rss_mb()
    started = time.perf_counter()
    frames = generate_demo(customers, days, seed, end)
    seconds = time.perf_counter() - started
    rows = {name: frame.height for name, frame in frames.items()}
    total = sum(rows.values())
    start = end - timedelta(days=days)
    churn = monthly_churn_rates(frames["subscriptions"], start, end)
    result: dict[str, Any] = {
        "benchmark": "demo-data",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": customers,
        "days": days,
        "seed": seed,
        "end": end.isoformat(),
        "generate_seconds": round(seconds, 3),
        "rows": rows,
        "rows_total": total,
        "rows_per_second": round(total / seconds) if seconds > 0 else None,
        "frames_mb": round(sum(f.estimated_size() for f in frames.values()) / 1e6, 1),
        "rss_before_mb": round(rss_before, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "mean_monthly_churn": round(sum(churn.values()) / len(churn), 4) if churn else None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "numpy": np.__version__,
        },
    }
    if load_url:
        from warehouse.db import engine_for_url
        from warehouse.demo import load_demo
        from warehouse.schema import build_warehouse
        from warehouse.settings import Settings

        settings = Settings(warehouse_url=load_url)  # type: ignore[arg-type]
        engine = engine_for_url(settings.url)
        try:
            started = time.perf_counter()
            load_demo(engine, build_warehouse(settings), frames)
            load_seconds = time.perf_counter() - started
        finally:
            engine.dispose()
        result.update(
            load_backend=settings.dialect,
            load_seconds=round(load_seconds, 3),
            load_rows_per_second=round(total / load_seconds) if load_seconds > 0 else None,
            peak_rss_mb=round(_peak_rss_mb(), 1),
        )
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line; print and save the result."""
    args = _parse_args(argv)
    result = run(args.customers, args.days, args.seed, args.end, args.load_url)
    print(
        f"demo data: {result['customers']:,} customers x {result['days']} days "
        f"in {result['generate_seconds']:.2f} s"
    )
    for name, count in result["rows"].items():
        print(f"  {name:<20} {count:>12,} rows")
    print(f"  {'total':<20} {result['rows_total']:>12,} rows, {result['rows_per_second']:,} rows/s")
    print(f"  frames {result['frames_mb']:,} MB, peak RSS {result['peak_rss_mb']:,} MB")
    print(f"  mean monthly churn {result['mean_monthly_churn']}")
    if "load_seconds" in result:
        print(
            f"  loaded into {result['load_backend']} in {result['load_seconds']:.2f} s "
            f"({result['load_rows_per_second']:,} rows/s)"
        )
    output = args.output or RESULTS_DIR / f"demo-data-{args.customers}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"  written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
