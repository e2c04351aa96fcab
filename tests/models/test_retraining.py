"""The retraining stages: the plan, the history check, the champion-overlap warning, and a
training run's heartbeat and run record on a real demo warehouse (SQLite)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import sqlalchemy as sa

from flows.retrain import TrainingResult, train_and_register
from flows.runtime import load_demo_warehouse
from models.nightly import champion_feature_settings
from models.registry import RegisteredModel, describe_model
from models.retraining import (
    TrainingFrame,
    TrainingPlanError,
    champion_overlap_warning,
    champion_target_warning,
    earliest_as_of,
    evaluate_model,
    fit_plan_to_history,
    history_start,
    lookback_start,
    training_plan,
)
from models.train import TrainedModel
from tests.models.synthetic import CATEGORICAL, FEATURES
from warehouse.db import engine_for
from warehouse.extract import SourceData
from warehouse.schema import build_warehouse
from warehouse.settings import Settings

FIRST_EVENT = datetime(2025, 8, 3, 0, 4, tzinfo=UTC)
"""The first recorded event of the literal history below (a demo warehouse's opening)."""


def _settings(**overrides: Any) -> Settings:
    return Settings(warehouse_url="sqlite:///unused.db", **overrides)  # type: ignore[arg-type]


def _sources(
    interactions: list[datetime], activity: list[datetime], subscriptions: list[datetime] = ()
) -> SourceData:
    utc = pl.Datetime("us", "UTC")
    return SourceData.from_frames(
        {
            "interactions": pl.DataFrame(
                {
                    "interaction_id": list(range(len(interactions))),
                    "customer_id": [1] * len(interactions),
                    "opened_at": pl.Series(interactions, dtype=utc),
                }
            ),
            "activity": pl.DataFrame(
                {
                    "customer_id": [1] * len(activity),
                    "occurred_at": pl.Series(activity, dtype=utc),
                }
            ),
            "subscriptions": pl.DataFrame(
                {
                    "customer_id": [1] * len(subscriptions),
                    "started_at": pl.Series(list(subscriptions), dtype=utc),
                }
            ),
        }
    )


HISTORY = _sources(
    [FIRST_EVENT + timedelta(hours=5), datetime(2026, 10, 1, tzinfo=UTC)],
    [FIRST_EVENT, datetime(2026, 10, 30, tzinfo=UTC)],
    [datetime(2019, 5, 1, tzinfo=UTC)],  # a customer who signed up long before the history
)


# -- the plan ------------------------------------------------------------------------------------


def test_training_plan_refuses_bad_counts_instead_of_using_the_default() -> None:
    settings = _settings()
    as_of = date(2026, 11, 1)
    for bad in (0, 1, 3, -3):
        with pytest.raises(TrainingPlanError, match=f"at least 4 snapshots, got {bad}"):
            training_plan(settings, as_of, n_snapshots=bad)
    with pytest.raises(TrainingPlanError, match="at least 1 day, got 0"):
        training_plan(settings, as_of, horizon_days=0)
    plan = training_plan(settings, as_of)
    assert len(plan.snapshots) == settings.n_snapshots == 12
    assert plan.snapshots[-1] == as_of - timedelta(days=30)
    assert plan.left_out == [] and plan.warnings == [] and plan.history_start is None
    # The extraction reads the lookback and the repeat-contact gap before the oldest snapshot.
    assert plan.start == lookback_start(settings, plan.snapshots[0]) - timedelta(days=7)


def test_history_starts_at_the_latest_first_event_of_interactions_and_activity() -> None:
    assert history_start(HISTORY) == FIRST_EVENT + timedelta(hours=5)
    later_activity = _sources([FIRST_EVENT], [FIRST_EVENT + timedelta(days=40)])
    assert history_start(later_activity) == FIRST_EVENT + timedelta(days=40)
    assert history_start(_sources([], [FIRST_EVENT])) == FIRST_EVENT
    assert history_start(_sources([], [], [FIRST_EVENT])) is None


def test_450_days_of_history_give_12_monthly_snapshots_with_full_lookback() -> None:
    """horizon + 11 * spacing + lookback = 30 + 330 + 90 = 450 days."""
    settings = _settings()
    sources = _sources([FIRST_EVENT], [FIRST_EVENT])
    as_of = FIRST_EVENT.date() + timedelta(days=450)
    plan = fit_plan_to_history(settings, training_plan(settings, as_of), sources)
    assert len(plan.snapshots) == 12 and plan.left_out == [] and plan.warnings == []
    assert plan.history_start == FIRST_EVENT

    one_day_short = training_plan(settings, as_of - timedelta(days=1))
    fitted = fit_plan_to_history(settings, one_day_short, sources)
    assert fitted.left_out == [one_day_short.snapshots[0]]
    assert fitted.snapshots == one_day_short.snapshots[1:]
    (warning,) = fitted.warnings
    assert "left out 1 of 12 snapshots" in warning
    assert one_day_short.snapshots[0].isoformat() in warning
    assert "2025-08-03T00:04" in warning and "90-day lookback" in warning


def test_too_little_history_is_refused_naming_the_dates_and_a_later_as_of() -> None:
    settings = _settings()
    sources = _sources([FIRST_EVENT], [FIRST_EVENT])
    plan = training_plan(settings, date(2025, 12, 1))
    with pytest.raises(TrainingPlanError) as refused:
        fit_plan_to_history(settings, plan, sources)
    message = str(refused.value)
    for text in (
        "only 1 of the 12 training snapshots as of 2025-12-01",
        "starts 2025-08-03T00:04",
        "Usable: 2025-11-01",
        "2024-12-06",  # the oldest, too early
        "training needs at least 4",
        "--as-of (2026-03-01 or later",
        "--snapshots",
    ):
        assert text in message, text
    # The suggested as-of is the first that works.
    suggested = earliest_as_of(settings, plan, FIRST_EVENT, 4)
    assert suggested == date(2026, 3, 1)
    enough = fit_plan_to_history(settings, training_plan(settings, suggested), sources)
    assert len(enough.snapshots) == 4
    with pytest.raises(TrainingPlanError, match="only 3 of the 12"):
        fit_plan_to_history(
            settings, training_plan(settings, suggested - timedelta(days=1)), sources
        )
    # Asking only for snapshots the history covers is no history problem, however few.
    asked = training_plan(settings, suggested, n_snapshots=4)
    few = fit_plan_to_history(settings, asked, sources)
    assert few.snapshots == asked.snapshots and few.warnings == []


def test_an_empty_history_cannot_be_judged_and_leaves_the_plan_alone() -> None:
    settings = _settings()
    plan = training_plan(settings, date(2026, 11, 1))
    assert fit_plan_to_history(settings, plan, _sources([], [])) == plan


# -- the champion's training window ---------------------------------------------------------------


def _registered(model: TrainedModel, train_dates: list[date], horizon_days: int = 30) -> Any:
    now = datetime(2026, 11, 1, tzinfo=UTC)
    return RegisteredModel(
        version="m-20261101-000000-abcdef12",
        status="champion",
        created_at=now,
        status_changed_at=now,
        label_kind="subscription",
        horizon_days=horizon_days,
        model=dataclasses.replace(model, train_dates=train_dates),
        metrics={},
        library_versions={},
        booster_sha256="",
        training_reference=None,
        report_path=None,
    )


def test_a_champion_trained_on_the_holdout_period_is_flagged(
    labelled: pl.DataFrame, trained: TrainedModel, other_model: TrainedModel
) -> None:
    holdout = trained.holdout_dates
    before = [d for d in sorted(labelled["snapshot_date"].unique()) if d < holdout[0]]
    clean = _registered(other_model, before)
    assert champion_overlap_warning(clean, holdout) is None

    leaky = _registered(other_model, [*before, holdout[0]])
    warning = champion_overlap_warning(leaky, holdout)
    assert warning is not None
    for text in (
        "m-20261101-000000-abcdef12",
        f"1 of them ({holdout[0]})",
        f"holdout {holdout[0]}..{holdout[-1]}",
        "optimistic",
    ):
        assert text in warning, text
    # A long horizon makes earlier labels reach into the holdout too.
    longer = champion_overlap_warning(_registered(other_model, before, 61), holdout)
    assert longer is not None and "2 of them" in longer

    settings = _settings(list_capacity=60)
    data = TrainingFrame(
        frame=labelled,
        event_types=[],
        features=FEATURES,
        categorical=CATEGORICAL,
        warnings=["left out 1 of 7 snapshots"],
    )
    evaluation = evaluate_model(settings, data, trained, leaky)
    assert evaluation.report.warnings == ["left out 1 of 7 snapshots", warning]
    assert evaluation.report.to_dict()["warnings"] == evaluation.report.warnings
    assert evaluate_model(settings, data, trained, clean).report.warnings == [
        "left out 1 of 7 snapshots"
    ]


# -- a training run on a demo warehouse ----------------------------------------------------------

END = date(2026, 4, 1)
DAYS = 280


@dataclass
class Trained:
    settings: Settings
    first: TrainingResult


def _run_row(settings: Settings, run_id: str) -> dict[str, Any]:
    engine = engine_for(settings)
    runs = build_warehouse(settings)["scoring_runs"]
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).mappings().one()
    finally:
        engine.dispose()
    return {
        key: json.loads(value) if isinstance(value, str) and key == "data_quality" else value
        for key, value in row.items()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A 280-day demo warehouse and a first model asking for 7 monthly snapshots (300 days of
    history needed: the oldest is left out), trained with a fast heartbeat."""
    root = tmp_path_factory.mktemp("retraining")
    settings = Settings(
        warehouse_url=f"sqlite:///{root / 'warehouse.db'}",  # type: ignore[arg-type]
        n_snapshots=7,
        artifacts_dir=root / "artifacts",
    )
    load_demo_warehouse(settings, customers=1500, days=DAYS, seed=3, end=END)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("flows.retrain.HEARTBEAT_EVERY", timedelta(milliseconds=200))
        first = train_and_register(settings, END, promote=True)
    yield Trained(settings, first)


def test_a_training_run_keeps_its_heartbeat(demo: Trained) -> None:
    row = _run_row(demo.settings, demo.first.run_id)
    assert row["kind"] == "train" and row["status"] == "succeeded"
    assert row["heartbeat_at"] > row["started_at"], "no heartbeat while training ran"


def test_snapshots_before_the_history_are_left_out_and_reported(demo: Trained) -> None:
    result = demo.first
    oldest = END - timedelta(days=30 + 6 * 30)
    assert result.left_out == [oldest]
    assert len(result.snapshots) == 6 and oldest not in result.snapshots
    assert result.history_start is not None
    assert result.history_start.date() == END - timedelta(days=DAYS)
    (warning,) = result.warnings
    assert "left out 1 of 7 snapshots" in warning and oldest.isoformat() in warning

    quality = _run_row(demo.settings, result.run_id)["data_quality"]
    assert quality["left_out_snapshots"] == [oldest.isoformat()]
    assert quality["warnings"] == [warning]
    assert quality["history_start"].startswith((END - timedelta(days=DAYS)).isoformat())
    assert result.report_path is not None
    assert "left out 1 of 7 snapshots" in Path(result.report_path).read_text(encoding="utf-8")
    engine = engine_for(demo.settings)
    try:
        stored = describe_model(engine, build_warehouse(demo.settings), result.version)
    finally:
        engine.dispose()
    assert stored["metrics"]["warnings"] == [warning]


def test_a_challenger_whose_holdout_the_champion_trained_on_carries_a_warning(
    demo: Trained,
) -> None:
    """The champion (as of END) trained on END - 90; a challenger as of END - 30 holds out
    END - 90 and END - 60, so the champion has seen that holdout's outcomes."""
    settings = demo.settings.with_overrides(n_snapshots=5)
    challenger = train_and_register(settings, END - timedelta(days=30), promote=False)
    overlap = [w for w in challenger.warnings if "champion" in w]
    assert len(overlap) == 1, challenger.warnings
    assert demo.first.version in overlap[0] and "optimistic" in overlap[0]
    assert (END - timedelta(days=90)).isoformat() in overlap[0]
    assert "champion" in challenger.comparison  # the comparison still ran

    quality = _run_row(settings, challenger.run_id)["data_quality"]
    assert overlap[0] in quality["warnings"]
    assert challenger.report_path is not None
    html = Path(challenger.report_path).read_text(encoding="utf-8")
    assert "<h2>Warnings</h2>" in html and "optimistic" in html
    engine = engine_for(settings)
    try:
        stored = describe_model(engine, build_warehouse(settings), challenger.version)
    finally:
        engine.dispose()
    assert overlap[0] in stored["metrics"]["warnings"]


def test_a_champion_trained_for_another_target_is_flagged(other_model: TrainedModel) -> None:
    settings = _settings()
    same = dataclasses.replace(
        _registered(other_model, [date(2026, 1, 1)]),
        feature_settings=champion_feature_settings(settings),
    )
    assert champion_target_warning(same, settings, horizon_days=30) is None
    # Models registered before feature settings were recorded: only label kind and horizon.
    older = _registered(other_model, [date(2026, 1, 1)])
    assert champion_target_warning(older, settings, horizon_days=30) is None

    warning = champion_target_warning(same, settings.with_overrides(public_channels=["x"]), 45)
    assert warning is not None
    assert "horizon_days 30 (now 45)" in warning
    assert "public_channels ['twitter', 'facebook', 'instagram'] (now ['x'])" in warning
    assert "a task it was not trained for" in warning
