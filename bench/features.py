"""Benchmark: point-in-time features of the demo warehouse, Polars against plain pandas.

    python -m bench.features --customers 100000 --snapshots 12
    python -m bench.features --customers 1000000 --snapshots 1

The demo warehouse (``warehouse.demo.generate_demo``) is generated once per size and
cached as Parquet under ``bench/data/`` (git-ignored). Each implementation then runs in a
subprocess of its own, so its peak memory is its own:

* ``polars``: frames read into memory, ``build_features(...).collect()`` timed;
* ``polars-scan``: the same query straight from the Parquet files, streaming engine
  (reading included in the time);
* ``pandas``: frames read into memory, ``bench.pandas_features.build_features_pandas``
  timed (one snapshot at a time).

Prints seconds, feature rows per second, source rows per second and peak RSS for each
and writes ``bench/results/features-<customers>.json``. Snapshots are the first day of
each of the last ``--snapshots`` months up to ``--end``; the history covers the feature
lookback before the first one, and at least ``--min-days`` (365) days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
DATA_DIR = BENCH_DIR / "data"
RESULTS_DIR = BENCH_DIR / "results"
IMPLEMENTATIONS = ("polars", "polars-scan", "pandas")
TABLES = ("customers", "subscriptions", "interactions", "activity", "retention_contacts")
DEFAULT_SEED = 20261122
DEFAULT_END = date(2026, 11, 1)


def monthly_snapshots(end: date, count: int) -> list[date]:
    """The first day of each of the ``count`` months up to and including ``end``'s month."""
    months = [(end.year * 12 + end.month - 1) - k for k in range(count)]
    return sorted(date(m // 12, m % 12 + 1, 1) for m in months)


def history_days(snapshots: Sequence[date], end: date, lookback_days: int) -> int:
    """Days of demo history: the lookback before the first snapshot up to ``end``."""
    return (end - snapshots[0]).days + lookback_days + 1


def data_dir(customers: int, days: int, seed: int, end: date) -> Path:
    """Where the Parquet cache of one demo warehouse lives."""
    return DATA_DIR / f"demo-{customers}c-{days}d-seed{seed}-end{end.isoformat()}"


def generate(customers: int, days: int, seed: int, end: date, target: Path) -> None:
    """Generate the demo warehouse and write one Parquet file per table."""
    from warehouse.demo import generate_demo

    frames = generate_demo(customers, days, seed, end)
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.write_parquet(partial / f"{name}.parquet")
    partial.rename(target)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Measurement:
    """One implementation's run."""

    implementation: str
    seconds: float
    cpu_seconds: float
    feature_rows: int
    feature_columns: int
    source_rows: int
    feature_rows_per_second: float
    source_rows_per_second: float
    load_seconds: float
    peak_rss_mb: float
    rss_after_load_mb: float
    load_average: tuple[float, float, float]


def run_one(implementation: str, source: Path, snapshots: list[date], types: list[str]) -> None:
    """Time one implementation in this process and print its measurement as JSON."""
    import psutil

    from features.build import FeatureConfig

    config = FeatureConfig()
    started = time.perf_counter()
    if implementation == "polars-scan":
        import polars as pl

        from features.build import build_features

        lazy = {t: pl.scan_parquet(source / f"{t}.parquet") for t in TABLES}
        source_rows = sum(f.select(pl.len()).collect().item() for f in lazy.values())
        load_seconds = 0.0
        rss_after_load = psutil.Process().memory_info().rss / 2**20
        started, cpu = time.perf_counter(), time.process_time()
        result = build_features(lazy, snapshots, config, types).collect(engine="streaming")
        rows, columns = result.height, result.width
    elif implementation == "polars":
        import polars as pl

        from features.build import build_features

        frames = {t: pl.read_parquet(source / f"{t}.parquet") for t in TABLES}
        source_rows = sum(f.height for f in frames.values())
        load_seconds = time.perf_counter() - started
        rss_after_load = psutil.Process().memory_info().rss / 2**20
        started, cpu = time.perf_counter(), time.process_time()
        lazy = {name: frame.lazy() for name, frame in frames.items()}
        result = build_features(lazy, snapshots, config, types).collect()
        rows, columns = result.height, result.width
    elif implementation == "pandas":
        import pandas as pd

        from bench.pandas_features import build_features_pandas

        tables = {t: pd.read_parquet(source / f"{t}.parquet") for t in TABLES}
        source_rows = sum(len(f) for f in tables.values())
        load_seconds = time.perf_counter() - started
        rss_after_load = psutil.Process().memory_info().rss / 2**20
        started, cpu = time.perf_counter(), time.process_time()
        computed = build_features_pandas(tables, snapshots, config, types)
        rows, columns = computed.shape
    else:
        raise SystemExit(f"unknown implementation {implementation!r}")
    seconds = time.perf_counter() - started
    measurement = Measurement(
        implementation=implementation,
        seconds=round(seconds, 3),
        cpu_seconds=round(time.process_time() - cpu, 3),
        feature_rows=rows,
        feature_columns=columns,
        source_rows=source_rows,
        feature_rows_per_second=round(rows / seconds),
        source_rows_per_second=round(source_rows / seconds),
        load_seconds=round(load_seconds, 3),
        peak_rss_mb=round(peak_rss_mb(), 1),
        rss_after_load_mb=round(rss_after_load, 1),
        load_average=os.getloadavg(),
    )
    print(json.dumps(asdict(measurement)))


def _subprocess(args: list[str]) -> str:
    command = [sys.executable, "-m", "bench.features", *args]
    done = subprocess.run(  # noqa: S603 - our own module, arguments we built
        command, check=False, capture_output=True, text=True, cwd=BENCH_DIR.parent
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return done.stdout


def ensure_data(customers: int, days: int, seed: int, end: date) -> Path:
    """The cached demo warehouse, generated (in a subprocess) when missing."""
    target = data_dir(customers, days, seed, end)
    if not target.is_dir():
        print(f"generating the demo warehouse: {customers} customers, {days} days -> {target}")
        started = time.perf_counter()
        _subprocess(
            [
                "_generate",
                str(customers),
                str(days),
                str(seed),
                end.isoformat(),
                str(target),
            ]
        )
        print(f"  generated in {time.perf_counter() - started:.1f} s")
    return target


def _versions() -> dict[str, str]:
    import pandas as pd
    import polars as pl

    return {"python": platform.python_version(), "polars": pl.__version__, "pandas": pd.__version__}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes to ``bench/results``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--end", type=date.fromisoformat, default=DEFAULT_END)
    parser.add_argument(
        "--min-days",
        type=int,
        default=365,
        help="days of history at least (more when the snapshots' lookback needs it)",
    )
    parser.add_argument(
        "--implementations", nargs="+", choices=IMPLEMENTATIONS, default=list(IMPLEMENTATIONS)
    )
    parser.add_argument("--results", type=Path, default=None, help="JSON output path")
    args = parser.parse_args(argv)

    import polars as pl

    from features.build import FeatureConfig, discover_event_types

    config = FeatureConfig()
    snapshots = monthly_snapshots(args.end, args.snapshots)
    days = max(args.min_days, history_days(snapshots, args.end, config.lookback_days))
    source = ensure_data(args.customers, days, args.seed, args.end)
    activity = pl.scan_parquet(source / "activity.parquet")
    event_types = discover_event_types(activity, config.max_event_types)
    sizes = {
        t: pl.scan_parquet(source / f"{t}.parquet").select(pl.len()).collect().item()
        for t in TABLES
    }
    print(
        f"{args.customers} customers, {len(snapshots)} snapshot(s) "
        f"{snapshots[0]}..{snapshots[-1]}, {len(event_types)} event types; source rows: "
        + ", ".join(f"{t} {n:,}" for t, n in sizes.items())
    )
    results = []
    for implementation in args.implementations:
        output = _subprocess(
            [
                "_run",
                implementation,
                str(source),
                ",".join(d.isoformat() for d in snapshots),
                json.dumps(event_types),
            ]
        )
        measurement = json.loads(output.strip().splitlines()[-1])
        results.append(measurement)
        print(
            f"  {implementation:12s} {measurement['seconds']:8.2f} s "
            f"(cpu {measurement['cpu_seconds']:7.2f} s)  "
            f"{measurement['feature_rows_per_second']:>10,} feature rows/s  "
            f"{measurement['source_rows_per_second']:>11,} source rows/s  "
            f"peak RSS {measurement['peak_rss_mb']:8.1f} MiB "
            f"(after loading {measurement['rss_after_load_mb']:.1f})  "
            f"load avg {measurement['load_average'][0]:.1f}"
        )
    rows = {r["feature_rows"] for r in results}
    if len(rows) > 1:
        print(f"WARNING: implementations disagree on the number of feature rows: {rows}")
    report = {
        "benchmark": "features",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": args.customers,
        "snapshots": [d.isoformat() for d in snapshots],
        "history_days": days,
        "seed": args.seed,
        "event_types": event_types,
        "source_rows": sizes,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": _versions(),
        "results": results,
    }
    path = args.results or RESULTS_DIR / f"features-{args.customers}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


def _entry(argv: list[str]) -> None:
    if argv and argv[0] == "_run":
        _, implementation, source, snapshot_list, types = argv
        snapshots = [date.fromisoformat(d) for d in snapshot_list.split(",")]
        run_one(implementation, Path(source), snapshots, json.loads(types))
    elif argv and argv[0] == "_generate":
        _, customers, days, seed, end, target = argv
        generate(int(customers), int(days), int(seed), date.fromisoformat(end), Path(target))
    else:
        main(argv)


if __name__ == "__main__":
    _entry(sys.argv[1:])
