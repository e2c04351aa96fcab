"""The naive baseline: the nightly job as a team typically writes it first, in pandas.

    python -m bench.naive --url postgresql://... --as-of 2026-11-01 [--json-out FILE]

Stages, each timed:

- **extract**: ``pandas.read_sql`` through SQLAlchemy of the five source tables, each limited
  to the lookback period (90 days before the snapshot) by a bound parameter.
- **features**: :func:`bench.pandas_features.build_features_pandas`, the straightforward
  pandas re-implementation of every model feature (per-snapshot filters and
  ``groupby("customer_id")``; verified equal to the Polars build in the features tests), for
  the one scoring snapshot and the champion's event types.
- **predict**: the champion's LightGBM booster (``models.registry.load_model``) and its
  calibrator on every active customer.
- **prioritise**: value at risk (probability x monthly value x horizon months), customers
  contacted in the cool-down period skipped, ranked, the top ``list_capacity`` listed.
- **reasons**: exact contributions (``pred_contrib=True``) for the listed customers only,
  the top three positive ones as reason codes.
- **write**: ``DataFrame.to_sql(if_exists="append", chunksize=...)`` of every scored row into
  a scratch table (:data:`SCRATCH_TABLE`, created before and dropped after, untimed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import sqlalchemy as sa

SCRATCH_TABLE = "bench_naive_list"
WRITE_CHUNK_ROWS = 10_000
DAYS_PER_MONTH = 30.4375
T = TypeVar("T")


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True, format="mixed")


def _hours(delta: pd.Series) -> pd.Series:
    hours: pd.Series = delta.dt.total_seconds() / 3600.0
    return hours


def _timed(stages: dict[str, dict[str, Any]], name: str, step: Callable[[], T], rows: int) -> T:
    from bench.harness import RssSampler, stage_record

    with RssSampler() as sampler:
        started = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - started
    stages[name] = stage_record(seconds, rows, sampler.peak_mb)
    return result


def run_naive(url: str, as_of: date) -> dict[str, Any]:
    """Run the naive nightly job on ``url`` for ``as_of``; return its timings."""
    from pydantic import SecretStr

    from bench.pandas_features import build_features_pandas
    from features.build import FeatureConfig
    from models.registry import load_model
    from warehouse.schema import SOURCE_TABLES, build_warehouse
    from warehouse.settings import Settings

    settings = Settings(warehouse_url=SecretStr(url))
    wh = build_warehouse(settings)
    engine = sa.create_engine(settings.url)
    cutoff_dt = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    cutoff = pd.Timestamp(cutoff_dt)
    start = cutoff_dt - timedelta(days=max(settings.lookback_days, settings.cooldown_days))
    stages: dict[str, dict[str, Any]] = {}
    started_all = time.perf_counter()
    champion = load_model(engine, wh)
    booster = champion.model.booster
    encoding = champion.model.encoding

    def extract() -> dict[str, pd.DataFrame]:
        frames: dict[str, pd.DataFrame] = {}
        for name in SOURCE_TABLES:
            table = wh[name]
            query = sa.select(table)
            if name == "subscriptions":
                query = query.where(sa.or_(table.c.ended_at.is_(None), table.c.ended_at >= start))
            elif name in ("interactions", "activity", "retention_contacts"):
                column = {
                    "interactions": "opened_at",
                    "activity": "occurred_at",
                    "retention_contacts": "contacted_at",
                }[name]
                query = query.where(table.c[column] >= start)
            with engine.connect() as conn:
                frame = pd.read_sql(query, conn)
            for column in frame.columns:
                if column.endswith("_at"):
                    frame[column] = _utc(frame[column])
            frames[name] = frame
        return frames

    frames = extract_frames = _timed(stages, "extract", extract, 0)
    source_rows = sum(len(f) for f in extract_frames.values())
    stages["extract"]["rows"] = source_rows
    stages["extract"]["rows_per_s"] = round(source_rows / max(stages["extract"]["seconds"], 1e-9))

    def features() -> pd.DataFrame:
        config = FeatureConfig.from_settings(settings)
        built = build_features_pandas(frames, [as_of], config, list(champion.event_types))
        return built.set_index("customer_id")

    table = _timed(stages, "features", features, source_rows)

    def predict() -> tuple[np.ndarray, np.ndarray]:
        matrix = np.full((len(table), len(encoding.features)), np.nan)
        for index, name in enumerate(encoding.features):
            if name not in table.columns:
                continue
            if name in encoding.categories:
                levels = {value: code for code, value in enumerate(encoding.categories[name])}
                matrix[:, index] = table[name].map(levels).astype(float).to_numpy()
            else:
                matrix[:, index] = pd.to_numeric(table[name], errors="coerce").to_numpy(float)
        raw = booster.predict(matrix)
        return matrix, np.asarray(champion.model.calibrator.apply(raw), dtype=float)

    matrix, probability = _timed(stages, "predict", predict, len(table))

    def prioritise() -> pd.DataFrame:
        scored = pd.DataFrame(
            {
                "customer_id": table.index.to_numpy(),
                "churn_probability": probability,
                "segment": table["segment"].to_numpy(),
                "customer_value": table["customer_value"].fillna(0.0).to_numpy(),
            }
        )
        months = settings.horizon_days / DAYS_PER_MONTH
        scored["value_at_risk"] = scored["churn_probability"] * scored["customer_value"] * months
        contacts = frames["retention_contacts"]
        recent = contacts[
            (contacts["contacted_at"] < cutoff)
            & (contacts["contacted_at"] >= cutoff - pd.Timedelta(days=settings.cooldown_days))
        ]
        scored["cooled_down"] = scored["customer_id"].isin(recent["customer_id"])
        scored = scored.sort_values(
            ["cooled_down", "value_at_risk"], ascending=[True, False]
        ).reset_index(drop=True)
        scored["rank"] = np.arange(1, len(scored) + 1)
        scored["listed"] = (~scored["cooled_down"]) & (scored["rank"] <= settings.list_capacity)
        scored["priority"] = np.where(scored["listed"], "high", "low")
        return scored

    scored = _timed(stages, "prioritise", prioritise, len(table))
    listed_ids = scored.loc[scored["listed"], "customer_id"].to_numpy()

    def reasons() -> pd.DataFrame:
        positions = table.index.get_indexer(listed_ids)
        contributions = np.asarray(booster.predict(matrix[positions], pred_contrib=True))[:, :-1]
        names = np.array(encoding.features)
        top = np.argsort(-contributions, axis=1)[:, :3]
        out = pd.DataFrame({"customer_id": listed_ids})
        for k in range(3):
            out[f"reason_{k + 1}_code"] = names[top[:, k]]
            out[f"reason_{k + 1}"] = [f"{n} raised the churn risk" for n in names[top[:, k]]]
        return out

    explained = _timed(stages, "reasons", reasons, len(listed_ids))

    rows = scored.merge(explained, on="customer_id", how="left")
    rows["as_of"] = as_of
    rows["model_version"] = champion.version
    rows["run_id"] = "naive-baseline"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")

    def write() -> int:
        rows.to_sql(
            SCRATCH_TABLE, engine, if_exists="append", index=False, chunksize=WRITE_CHUNK_ROWS
        )
        return len(rows)

    written = _timed(stages, "write", write, len(rows))
    total = time.perf_counter() - started_all
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {SCRATCH_TABLE}")
    engine.dispose()
    computed = [f for f in encoding.features if f in table.columns]
    return {
        "total_seconds": round(total, 4),
        "stages": stages,
        "scored": len(table),
        "listed": len(listed_ids),
        "written": written,
        "source_rows": source_rows,
        "features_computed": len(computed),
        "features_missing": [f for f in encoding.features if f not in table.columns],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the naive baseline and print (or write) its timings as JSON."""
    from bench.harness import child_main

    child_main(argv, prog="python -m bench.naive", description=__doc__, measure=run_naive)


if __name__ == "__main__":
    main()
