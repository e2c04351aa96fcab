"""Scoring end to end: probabilities, the day's list with reasons and actions, written back."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from models.actions import load_action_rules
from models.prioritise import PrioritySettings
from models.scoring import build_retention_list, default_as_of, score_customers
from models.train import TrainedModel
from warehouse.outputs import (
    RunSummary,
    latest_runs,
    read_retention_list,
    replace_retention_list,
    start_run,
)
from warehouse.schema import Warehouse, contract_schema

AS_OF = date(2026, 11, 20)


def test_score_customers_gives_calibrated_probabilities(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    scored = score_customers(trained_model, scoring_features)
    assert scored.columns == ["customer_id", "churn_probability", "segment", "customer_value"]
    assert scored["customer_id"].equals(scoring_features["customer_id"])
    expected = trained_model.predict_proba(scoring_features)
    np.testing.assert_allclose(scored["churn_probability"].to_numpy(), expected)
    assert scored["customer_value"].null_count() == scoring_features["customer_value"].null_count()


def test_score_customers_refuses_bad_frames(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    with pytest.raises(ValueError, match="lacks 1 model feature"):
        score_customers(trained_model, scoring_features.drop("open_complaints"))
    with pytest.raises(ValueError, match="repeats customer_id in 1 row"):
        score_customers(trained_model, pl.concat([scoring_features, scoring_features.head(1)]))
    assert score_customers(trained_model, scoring_features.clear()).height == 0


def test_default_as_of_is_today_in_the_configured_zone() -> None:
    late_evening_utc = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)
    assert default_as_of("UTC", late_evening_utc) == date(2026, 11, 20)
    assert default_as_of("Asia/Tokyo", late_evening_utc) == date(2026, 11, 21)


def test_the_days_list_end_to_end(
    trained_model: TrainedModel,
    scoring_features: pl.DataFrame,
    engine: sa.Engine,
    wh: Warehouse,
) -> None:
    run_id = start_run(engine, wh, kind="score", as_of=AS_OF)
    cooled = pl.DataFrame({"customer_id": [5, 17, 42, 99, 250]})
    config = PrioritySettings(capacity=40, segment_capacity={"enterprise": 10})
    result = build_retention_list(
        trained_model,
        scoring_features,
        cooled,
        config=config,
        rules=load_action_rules(None),
        as_of=AS_OF,
        model_version="m-test",
        run_id=run_id,
    )
    rows = result.rows
    assert rows.schema == contract_schema("retention_list")
    assert set(result.timings) == {"score", "prioritise", "reasons", "actions", "assemble"}
    assert result.counts == {"n_scored": 400, "n_listed": 40, "n_cooled_down": 5}

    summary = RunSummary(model_version="m-test", counts=result.counts, timings=result.timings)
    replace_retention_list(engine, wh, AS_OF, rows, run_id, summary=summary)
    stored = read_retention_list(engine, wh, as_of=AS_OF, listed_only=False)
    assert stored.equals(rows)

    assert sorted(stored["rank"]) == list(range(1, 401))
    listed = stored.filter("listed")
    assert listed.height == 40
    assert listed.filter(pl.col("segment") == "enterprise").height <= 10
    assert not listed.filter(pl.col("customer_id").is_in([5, 17, 42, 99, 250])).height
    assert stored.filter("cooled_down").height == 5
    # Listed customers are explained exactly, everyone else not at all.
    assert set(listed["reason_source"]) == {"exact"}
    assert set(stored.filter(~pl.col("listed"))["reason_source"]) == {"none"}
    assert stored.filter(~pl.col("listed"))["reason_1"].null_count() == 360
    # Every listed customer has an action; it follows the rule for the top reason.
    assert listed["action_code"].null_count() == 0
    complaints = listed.filter(pl.col("reason_1_code") == "open_complaints")
    assert set(complaints["action_code"]) <= {"resolve_and_call_back"}
    # The reasons are features pushing this customer's score up.
    contributions = trained_model.contributions(
        scoring_features.join(listed.select("customer_id"), on="customer_id", how="semi")
    )
    index = {name: j for j, name in enumerate(trained_model.features)}
    ordered = scoring_features.join(listed.select("customer_id"), on="customer_id", how="semi")
    by_customer = dict(zip(ordered["customer_id"].to_list(), contributions, strict=True))
    for row in listed.iter_rows(named=True):
        for k in (1, 2, 3):
            code = row[f"reason_{k}_code"]
            if code is not None:
                assert by_customer[row["customer_id"]][index[code]] > 0

    run = latest_runs(engine, wh).row(0, named=True)
    assert (run["status"], run["n_scored"], run["n_listed"], run["n_cooled_down"]) == (
        "succeeded",
        400,
        40,
        5,
    )
