"""The model registry on SQLite and PostgreSQL: round trip, integrity, promotion, rollback."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from models.registry import (
    CHALLENGER,
    CHAMPION,
    RETIRED,
    ModelIntegrityError,
    ModelNotFoundError,
    NoChampionError,
    RegistryError,
    booster_sha256,
    champion_version,
    check_booster_text,
    describe_model,
    list_models,
    load_model,
    new_version,
    promote,
    register,
    rollback,
    set_report_path,
)
from models.train import TrainedModel, holdout_rows
from warehouse.schema import Warehouse

Registry = tuple[sa.Engine, Warehouse]
METRICS = {
    "overall": {
        "model": {"pr_auc": 0.41, "roc_auc": 0.75, "top_decile_lift": math.nan},
        "rule_baseline": {"pr_auc": 0.33},
    }
}


def _register(registry: Registry, model: TrainedModel, second: int, **kwargs: object) -> str:
    engine, wh = registry
    return register(
        engine,
        wh,
        model,
        metrics=METRICS,
        label_kind="subscription",
        horizon_days=30,
        created_at=datetime(2026, 11, 22, 14, 30, second, tzinfo=UTC),
        **kwargs,  # type: ignore[arg-type]
    )


def _statuses(registry: Registry) -> dict[str, str]:
    engine, wh = registry
    return {row["model_version"]: row["status"] for row in list_models(engine, wh)}


def test_round_trip_restores_a_model_that_scores_identically(
    registry: Registry, trained: TrainedModel, labelled: pl.DataFrame
) -> None:
    engine, wh = registry
    recorded = {"lookback_days": 90, "public_channels": ["x"], "timezone": "Europe/Paris"}
    version = _register(
        registry, trained, 12, training_reference={"rows": 3600}, feature_settings=recorded
    )
    digest = booster_sha256(trained.booster_text())
    assert version == f"m-20261122-143012-{digest[:8]}"
    assert version == new_version(trained, datetime(2026, 11, 22, 14, 30, 12, tzinfo=UTC))

    loaded = load_model(engine, wh, version)
    assert loaded.status == CHALLENGER
    assert loaded.feature_settings == recorded
    assert "feature_settings" not in loaded.model.params
    assert loaded.booster_sha256 == digest
    assert loaded.created_at == datetime(2026, 11, 22, 14, 30, 12, tzinfo=UTC)
    model = loaded.model
    assert model.booster_text() == trained.booster_text()
    assert model.features == trained.features
    assert model.categorical == trained.categorical
    assert model.categories == trained.categories
    assert model.calibrator == trained.calibrator
    assert model.train_dates == trained.train_dates
    assert model.holdout_dates == trained.holdout_dates
    assert model.validation_dates == trained.validation_dates
    assert model.best_iteration == trained.best_iteration
    assert loaded.event_types == ["login"]
    assert model.params["lightgbm"] == trained.params["lightgbm"]

    holdout = holdout_rows(labelled, trained)
    np.testing.assert_array_equal(model.predict_proba(holdout), trained.predict_proba(holdout))
    np.testing.assert_array_equal(loaded.predict_proba(holdout), trained.predict_proba(holdout))
    np.testing.assert_array_equal(
        model.contributions(holdout.head(20)), trained.contributions(holdout.head(20))
    )

    assert loaded.metrics["overall"]["model"]["top_decile_lift"] is None  # NaN stored as null
    assert loaded.library_versions["lightgbm"] == "4.7.0"
    assert loaded.training_reference == {"rows": 3600}
    [entry] = list_models(engine, wh)
    assert entry["model_version"] == version
    assert entry["metrics"]["pr_auc"] == 0.41
    assert entry["training_end"] == max(trained.train_dates)
    info = describe_model(engine, wh, version)
    assert "booster" not in info and info["booster_chars"] == len(trained.booster_text())
    assert info["features"] == trained.features


def test_missing_models_are_reported(registry: Registry, trained: TrainedModel) -> None:
    engine, wh = registry
    with pytest.raises(NoChampionError, match="no champion model"):
        load_model(engine, wh)
    with pytest.raises(ModelNotFoundError, match="no model version m-nope"):
        load_model(engine, wh, "m-nope")
    with pytest.raises(ModelNotFoundError):
        promote(engine, wh, "m-nope")
    with pytest.raises(NoChampionError):
        rollback(engine, wh)
    assert champion_version(engine, wh) is None
    version = _register(registry, trained, 1)
    with pytest.raises(RegistryError, match="already registered"):
        _register(registry, trained, 1)
    set_report_path(engine, wh, version, "artifacts/models/x/report.html")
    assert load_model(engine, wh, version).report_path == "artifacts/models/x/report.html"


def test_tampered_booster_is_refused(registry: Registry, trained: TrainedModel) -> None:
    engine, wh = registry
    table = wh["model_registry"]
    version = _register(registry, trained, 2)
    text = trained.booster_text()
    start = text.index("leaf_value=") + len("leaf_value=")
    tampered = text[:start] + ("9" if text[start] != "9" else "8") + text[start + 1 :]
    assert len(tampered) == len(text)
    with engine.begin() as conn:
        conn.execute(
            sa.update(table).where(table.c.model_version == version).values(booster=tampered)
        )
    with pytest.raises(ModelIntegrityError, match=f"model {version}: booster SHA-256"):
        load_model(engine, wh, version)


def test_truncated_booster_is_refused_before_lightgbm_reads_it(
    registry: Registry, trained: TrainedModel
) -> None:
    engine, wh = registry
    table = wh["model_registry"]
    version = _register(registry, trained, 3)
    text = trained.booster_text()
    truncated = text[: len(text) // 2]
    with engine.begin() as conn:
        conn.execute(
            sa.update(table).where(table.c.model_version == version).values(booster=truncated)
        )
    with pytest.raises(ModelIntegrityError, match="altered or truncated"):
        load_model(engine, wh, version)
    # Even with a matching hash the structure check refuses it (LightGBM would abort).
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.model_version == version)
            .values(booster_sha256=hashlib.sha256(truncated.encode()).hexdigest())
        )
    with pytest.raises(ModelIntegrityError, match="truncated or damaged at tree"):
        load_model(engine, wh, version)


def test_booster_structure_check(trained: TrainedModel) -> None:
    text = trained.booster_text()
    assert check_booster_text(text, trained.features) == trained.best_iteration
    with pytest.raises(ModelIntegrityError, match="differ from the registered feature list"):
        check_booster_text(text, list(reversed(trained.features)))
    with pytest.raises(ModelIntegrityError, match="end of parameters"):
        check_booster_text(text[: text.index("end of parameters")])
    damaged = text.replace("leaf_value=", "leaf_value=1 ", 1)
    with pytest.raises(ModelIntegrityError):
        check_booster_text(damaged)


def test_promotion_is_atomic_and_rollback_walks_back(
    registry: Registry, trained: TrainedModel, other_model: TrainedModel
) -> None:
    engine, wh = registry
    first = _register(registry, trained, 4)
    second = _register(registry, other_model, 5)
    third = _register(registry, trained, 6, version="m-third")

    promote(engine, wh, first)
    assert _statuses(registry) == {first: CHAMPION, second: CHALLENGER, third: CHALLENGER}
    assert load_model(engine, wh).version == first
    promote(engine, wh, first)  # already champion: nothing changes
    promote(engine, wh, second)
    assert _statuses(registry) == {first: RETIRED, second: CHAMPION, third: CHALLENGER}
    promote(engine, wh, third)
    assert _statuses(registry) == {first: RETIRED, second: RETIRED, third: CHAMPION}
    assert champion_version(engine, wh) == third

    assert rollback(engine, wh) == second
    assert _statuses(registry) == {first: RETIRED, second: CHAMPION, third: RETIRED}
    assert rollback(engine, wh) == first
    assert _statuses(registry) == {first: CHAMPION, second: RETIRED, third: RETIRED}
    with pytest.raises(RegistryError, match="replaced no earlier champion"):
        rollback(engine, wh)
    assert _statuses(registry)[first] == CHAMPION
    history = load_model(engine, wh, second).metrics["promotions"]
    assert [(h["how"], h["replaced"]) for h in history] == [
        ("promote", first),
        ("rollback", first),
    ]


def test_a_failed_promotion_changes_nothing(registry: Registry, trained: TrainedModel) -> None:
    engine, wh = registry
    table = wh["model_registry"]
    first = _register(registry, trained, 7)
    second = _register(registry, trained, 8, version="m-second")
    promote(engine, wh, first)
    # The new champion's promotion history is damaged: the step after retiring the old
    # champion fails, and the whole transaction rolls back.
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.model_version == second)
            .values(metrics={"promotions": "not a list"})
        )
    with pytest.raises(ModelIntegrityError, match="promotion history of model m-second"):
        promote(engine, wh, second)
    assert _statuses(registry) == {first: CHAMPION, second: CHALLENGER}


def test_two_champions_are_reported_and_a_promotion_repairs_them(
    registry: Registry, trained: TrainedModel
) -> None:
    engine, wh = registry
    table = wh["model_registry"]
    first = _register(registry, trained, 10)
    second = _register(registry, trained, 11, version="m-second")
    third = _register(registry, trained, 12, version="m-third")
    with engine.begin() as conn:
        conn.execute(sa.update(table).values(status=CHAMPION))
        conn.execute(
            sa.update(table).where(table.c.model_version == third).values(status=CHALLENGER)
        )
    with pytest.raises(RegistryError, match="2 models are marked champion"):
        load_model(engine, wh)
    promote(engine, wh, third)
    assert _statuses(registry) == {first: RETIRED, second: RETIRED, third: CHAMPION}
