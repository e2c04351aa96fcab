"""Data-quality report of a feature build, JSON-able for ``scoring_runs.data_quality``."""

from __future__ import annotations

import math
from typing import Any, Final

import polars as pl

KEY_COLUMNS: Final = ("snapshot_date", "customer_id")
TOP_CATEGORIES: Final = 5
"""How many of the most frequent values the report lists for a categorical column."""


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def feature_quality(features: pl.DataFrame) -> dict[str, Any]:
    """Rows per snapshot and, per feature column, null rate and value range.

    ``features`` is a collected :func:`features.build.build_features` frame. Returns
    ``{"rows", "customers", "duplicate_rows", "rows_per_snapshot": {iso date: rows},
    "features": {name: {...}}}``; a numeric column reports ``null_rate``, ``non_finite``
    (NaN or infinite values), ``min``, ``max`` and ``mean`` over its finite values (None when
    it has none); a string column reports ``null_rate``, ``distinct`` and ``top`` (its most
    frequent values with their row counts, ties by value).
    """
    missing = [c for c in KEY_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(f"the feature frame lacks key column(s): {', '.join(missing)}")
    rows = features.height
    per_snapshot = features.group_by("snapshot_date").len().sort("snapshot_date")
    report: dict[str, Any] = {
        "rows": rows,
        "customers": features["customer_id"].n_unique(),
        "duplicate_rows": rows - features.select(KEY_COLUMNS).n_unique() if rows else 0,
        "rows_per_snapshot": {
            d.isoformat(): n
            for d, n in zip(per_snapshot["snapshot_date"], per_snapshot["len"], strict=True)
        },
        "features": {},
    }
    numeric = [
        c for c in features.columns if c not in KEY_COLUMNS and features.schema[c].is_numeric()
    ]
    textual = [c for c in features.columns if c not in KEY_COLUMNS and c not in numeric]
    stats = features.select(
        *(pl.col(c).null_count().alias(f"{c}\0nulls") for c in features.columns),
        *(
            expr
            for c in numeric
            for expr in (
                (~pl.col(c).cast(pl.Float64).is_finite()).sum().alias(f"{c}\0non_finite"),
                _finite(c).min().alias(f"{c}\0min"),
                _finite(c).max().alias(f"{c}\0max"),
                _finite(c).mean().alias(f"{c}\0mean"),
            )
        ),
        *(pl.col(c).n_unique().alias(f"{c}\0distinct") for c in textual),
    ).row(0, named=True)

    def null_rate(column: str) -> float:
        return stats[f"{column}\0nulls"] / rows if rows else 0.0

    for column in features.columns:
        if column in KEY_COLUMNS:
            continue
        if column in numeric:
            report["features"][column] = {
                "null_rate": null_rate(column),
                "non_finite": int(stats[f"{column}\0non_finite"] or 0),
                "min": _number(stats[f"{column}\0min"]),
                "max": _number(stats[f"{column}\0max"]),
                "mean": _number(stats[f"{column}\0mean"]),
            }
        else:
            counts = features.get_column(column).drop_nulls().cast(pl.String).value_counts()
            top = counts.sort(["count", column], descending=[True, False]).head(TOP_CATEGORIES)
            nulls = stats[f"{column}\0nulls"]
            report["features"][column] = {
                "null_rate": null_rate(column),
                "distinct": int(stats[f"{column}\0distinct"]) - (1 if nulls else 0),
                "top": {str(value): int(n) for value, n in top.iter_rows()},
            }
    return report


def _finite(column: str) -> pl.Expr:
    values = pl.col(column).cast(pl.Float64)
    return values.filter(values.is_finite())
