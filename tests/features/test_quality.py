"""The data-quality report of a feature build."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest

from features.build import FeatureConfig, build_features
from features.quality import feature_quality
from tests.features.frames import make_sources
from tests.features.test_build import CUSTOMERS, INTERACTIONS, SUBSCRIPTIONS


def test_report_of_a_build_is_json_and_counts_rows_per_snapshot() -> None:
    sources = make_sources(
        customers=CUSTOMERS, subscriptions=SUBSCRIPTIONS, interactions=INTERACTIONS
    )
    frame = build_features(
        sources, [date(2026, 3, 1), date(2026, 1, 5)], FeatureConfig(), ["login"]
    ).collect()
    report = feature_quality(frame)
    json.dumps(report, allow_nan=False)
    assert report["rows"] == frame.height == 10
    assert report["customers"] == 5
    assert report["duplicate_rows"] == 0
    assert report["rows_per_snapshot"] == {"2026-01-05": 5, "2026-03-01": 5}
    contacts = report["features"]["contacts_90d"]
    assert contacts["null_rate"] == 0.0
    assert contacts["min"] == 0.0
    assert contacts["max"] == 7.0
    assert contacts["mean"] == pytest.approx(frame["contacts_90d"].mean())
    assert report["features"]["oldest_open_complaint_days"]["null_rate"] == pytest.approx(0.8)
    assert report["features"]["plan"] == {
        "null_rate": 0.0,
        "distinct": 3,
        "top": {"pro": 8, "addon": 1, "basic": 1},
    }
    assert set(report["features"]) == set(frame.columns) - {"snapshot_date", "customer_id"}


def test_report_handles_nulls_non_finite_values_duplicates_and_empty_frames() -> None:
    frame = pl.DataFrame(
        {
            "snapshot_date": [date(2026, 3, 1)] * 3,
            "customer_id": [1, 1, 2],
            "ratio": [1.0, float("inf"), None],
            "empty": pl.Series([None, None, None], dtype=pl.Float64),
            "segment": ["smb", None, "smb"],
        }
    )
    report = feature_quality(frame)
    json.dumps(report, allow_nan=False)
    assert report["duplicate_rows"] == 1
    assert report["features"]["ratio"] == {
        "null_rate": pytest.approx(1 / 3),
        "non_finite": 1,
        "min": 1.0,
        "max": 1.0,
        "mean": 1.0,
    }
    assert report["features"]["empty"]["min"] is None
    assert report["features"]["segment"] == {
        "null_rate": pytest.approx(1 / 3),
        "distinct": 1,
        "top": {"smb": 2},
    }
    empty = feature_quality(frame.clear())
    assert empty["rows"] == 0 and empty["rows_per_snapshot"] == {}
    assert empty["features"]["ratio"]["null_rate"] == 0.0
    with pytest.raises(ValueError, match="customer_id"):
        feature_quality(frame.drop("customer_id"))
