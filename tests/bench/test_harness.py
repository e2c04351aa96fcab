"""A quick run of the benchmark harness at the S tier on SQLite (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import (
    NIGHTLY_STAGES,
    TIERS,
    TRAINING_STAGES,
    bench_warehouse,
    prepare_warehouse,
    render_markdown,
    run_benchmark,
)

REQUIRED_KEYS = (
    "tier",
    "backend",
    "machine",
    "total_seconds",
    "peak_rss_mb",
    "stages",
    "baseline_total_seconds",
    "io_floor_seconds",
)
REQUIRED_STAGES = ("extract", "validate", "features", "predict", "reasons", "prioritise", "write")


def test_s_tier_run_writes_every_stage_and_key_then_reuses_the_warehouse(tmp_path: Path) -> None:
    result = run_benchmark(
        tier="S",
        backend="sqlite",
        baseline=True,
        results_dir=tmp_path / "results",
        train=True,
        data_dir=tmp_path / "data",
        echo=False,
    )
    written = json.loads((tmp_path / "results" / "S-sqlite.json").read_text())
    for key in REQUIRED_KEYS:
        assert key in written, key
    assert written["tier"] == "S"
    assert written["backend"] == "sqlite"
    assert written["customers"] == TIERS["S"] == 10_000
    for key in ("cores", "memory_gb", "cpu_model", "python", "libraries", "load_average_at_start"):
        assert key in written["machine"], key
    assert set(REQUIRED_STAGES) <= set(NIGHTLY_STAGES)
    for stage in (*NIGHTLY_STAGES, *TRAINING_STAGES):
        entry = written["stages"][stage]
        assert set(entry) >= {"seconds", "rows_per_s", "peak_rss_mb"}, stage
        assert entry["seconds"] >= 0
    assert written["total_seconds"] > 0
    assert written["io_floor_seconds"] is not None, written["io_floor"]
    floor = written["io_floor"]
    # The floor reads the way that was faster: one table after another, or as the job does.
    assert floor["read_seconds"] == min(
        floor["read_seconds_sequential"], floor["read_seconds_concurrent"]
    )
    # It reads what the job's SELECTs return; the job keeps those rows inside its window.
    assert sum(floor["read_rows"].values()) >= written["stages"]["extract"]["rows"] > 0
    assert written["baseline_total_seconds"] is not None, written["baseline"]
    assert written["baseline"]["scored"] == written["counts"]["scored"]
    assert written["baseline"]["written"] == written["baseline"]["scored"]
    assert written["counts"]["written"] == written["counts"]["scored"]
    assert result["ratios"]["job_over_io_floor"] is not None
    training = written["training"]
    assert training["snapshots"] == training["snapshots_requested"] == 12
    assert training["left_out_snapshots"] == []  # the tier's history covers every lookback
    for scorer in ("model", "rule_baseline"):
        metrics = training["metrics"][scorer]
        for name in ("roc_auc", "pr_auc", "ece", "log_loss", "brier", "top_decile_lift"):
            assert isinstance(metrics[name], float), (scorer, name, metrics.get(name))
    assert training["metrics"]["model"]["n_rows"] == training["metrics"]["rule_baseline"]["n_rows"]
    assert "| S-sqlite |" in render_markdown([written])

    rerun = prepare_warehouse(
        bench_warehouse("S", "sqlite", data_dir=tmp_path / "data"),
        tmp_path / "artifacts",
    )
    assert rerun["reused"] is True
    assert rerun["champion_seconds"] is None
    assert rerun["rows"] == written["warehouse"]["rows"]
