"""Training: the time split, determinism, the holdout never fitted, feature checks."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from models.train import (
    FeatureMismatchError,
    FeatureValueError,
    TrainedModel,
    TrainingDataError,
    holdout_rows,
    time_split,
    train_model,
)
from tests.models.conftest import small_config
from tests.models.synthetic import CATEGORICAL, FEATURES, labelled_frame


def _dates_frame(dates: list[date], rows_per_date: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "snapshot_date": [d for d in dates for _ in range(rows_per_date)],
            "customer_id": [i for _ in dates for i in range(rows_per_date)],
        }
    )


@pytest.mark.parametrize("seed", range(12))
def test_time_split_never_puts_a_holdout_date_in_training(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_dates = int(rng.integers(2, 15))
    offsets = np.sort(rng.choice(400, size=n_dates, replace=False))
    dates = [date(2025, 1, 1) + timedelta(days=int(o)) for o in offsets]
    frame = _dates_frame(dates).sample(fraction=1.0, shuffle=True, seed=seed)
    for holdout_snapshots in range(1, n_dates):
        train, holdout = time_split(frame, holdout_snapshots)
        assert holdout == dates[-holdout_snapshots:]
        assert train == dates[:-holdout_snapshots]
        assert not set(train) & set(holdout)
        assert max(train) < min(holdout)


def test_time_split_purges_dates_whose_label_window_reaches_the_holdout() -> None:
    dates = [date(2026, 1, 1) + timedelta(days=7 * k) for k in range(10)]
    train, holdout = time_split(_dates_frame(dates), 2, horizon_days=30)
    assert holdout == dates[-2:]
    assert train == [d for d in dates[:-2] if d + timedelta(days=30) <= holdout[0]]
    assert len(train) == 4


def test_time_split_needs_a_date_to_train_on() -> None:
    dates = [date(2026, 1, 1), date(2026, 2, 1)]
    with pytest.raises(TrainingDataError, match="2 distinct snapshot_date"):
        time_split(_dates_frame(dates), 2)


def test_model_slices_follow_time(trained: TrainedModel, labelled: pl.DataFrame) -> None:
    all_dates = sorted(labelled["snapshot_date"].unique().to_list())
    fit_dates = [date.fromisoformat(d) for d in trained.params["fit_dates"]]
    assert trained.holdout_dates == all_dates[-2:]
    assert trained.validation_dates == all_dates[-3:-2]
    assert fit_dates == all_dates[:-3]
    assert max(trained.train_dates) < min(trained.holdout_dates)
    assert trained.params["rows"]["holdout"] == 1200
    rows = trained.params["rows"]
    assert rows["early_stopping"] + rows["calibration"] == 600


def test_holdout_rows_are_never_fitted(labelled: pl.DataFrame, trained: TrainedModel) -> None:
    """Scrambling every holdout label and feature leaves the model byte for byte the same."""
    in_holdout = pl.col("snapshot_date").is_in(trained.holdout_dates)
    scrambled = labelled.with_columns(
        churned=pl.when(in_holdout).then(~pl.col("churned")).otherwise(pl.col("churned")),
        open_complaints=pl.when(in_holdout).then(99).otherwise(pl.col("open_complaints")),
        segment=pl.when(in_holdout).then(pl.lit("unseen")).otherwise(pl.col("segment")),
    )
    again = train_model(scrambled, FEATURES, CATEGORICAL, small_config(), event_types=["login"])
    assert again.booster_text() == trained.booster_text()
    assert again.calibrator == trained.calibrator
    assert again.categories == trained.categories


def test_same_seed_gives_byte_identical_booster(
    labelled: pl.DataFrame, trained: TrainedModel
) -> None:
    shuffled = labelled.sample(fraction=1.0, shuffle=True, seed=1)
    again = train_model(shuffled, FEATURES, CATEGORICAL, small_config(), event_types=["login"])
    assert again.booster_text() == trained.booster_text()
    assert again.calibrator.to_json() == trained.calibrator.to_json()
    different = train_model(labelled, FEATURES, CATEGORICAL, small_config(seed=12))
    assert different.booster_text() != trained.booster_text()


def test_categorical_features_are_native(trained: TrainedModel) -> None:
    assert trained.categorical == ["segment", "preferred_channel"]
    assert trained.categories["segment"] == ["consumer", "enterprise", "smb"]
    positions = ",".join(str(FEATURES.index(c)) for c in CATEGORICAL)
    assert f"[categorical_feature: {positions}]" in trained.booster_text()


def test_predictions_are_probabilities_and_contributions_add_up(
    trained: TrainedModel, labelled: pl.DataFrame
) -> None:
    holdout = holdout_rows(labelled, trained)
    raw = trained.predict_raw(holdout)
    calibrated = trained.predict_proba(holdout)
    assert raw.shape == calibrated.shape == (holdout.height,)
    assert np.all((calibrated > 0) & (calibrated < 1))
    # Platt scaling keeps the order of the booster's scores.
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(calibrated[order]) >= 0)
    contributions = trained.contributions(holdout.head(50))
    assert contributions.shape == (50, len(FEATURES) + 1)
    log_odds = np.log(raw[:50] / (1 - raw[:50]))
    np.testing.assert_allclose(contributions.sum(axis=1), log_odds, atol=1e-9)


def test_feature_mismatch_names_missing_and_extra(
    trained: TrainedModel, labelled: pl.DataFrame
) -> None:
    renamed = labelled.head(20).rename({"noise": "noise_v2", "tenure_days": "tenure"})
    with pytest.raises(FeatureMismatchError) as caught:
        trained.predict_proba(renamed)
    assert caught.value.missing == ["tenure_days", "noise"]
    assert caught.value.extra == ["tenure", "noise_v2"]
    message = str(caught.value)
    for name in ("tenure_days", "noise", "tenure", "noise_v2", "20 rows"):
        assert name in message
    assert "churned" not in caught.value.extra


def test_extra_columns_are_refused_only_in_strict_mode(
    trained: TrainedModel, labelled: pl.DataFrame
) -> None:
    frame = labelled.head(20).with_columns(helper_text=pl.lit("x"))
    assert trained.predict_proba(frame).shape == (20,)
    with pytest.raises(
        FeatureMismatchError, match=r"extra 1 column\(s\) not in the model \[helper"
    ):
        trained.matrix(frame, allow_extra=False)
    assert trained.matrix(frame.drop("helper_text"), allow_extra=False).shape == (20, 8)


def test_unseen_category_is_scored_as_missing(
    trained: TrainedModel, labelled: pl.DataFrame
) -> None:
    rows = labelled.head(3)
    unseen = rows.with_columns(segment=pl.lit("galactic"))
    missing = rows.with_columns(segment=pl.lit(None, dtype=pl.String))
    np.testing.assert_array_equal(trained.predict_proba(unseen), trained.predict_proba(missing))
    assert trained.unseen_categories(unseen) == {"segment": 3}
    assert trained.unseen_categories(missing) == {}


def test_bad_feature_values_are_refused_with_counts(
    trained: TrainedModel, labelled: pl.DataFrame
) -> None:
    rows = labelled.head(10)
    infinite = rows.with_columns(
        noise=pl.when(pl.int_range(pl.len()) < 2).then(float("inf")).otherwise(pl.col("noise"))
    )
    with pytest.raises(FeatureValueError, match="noise: 2 of 10"):
        trained.predict_proba(infinite)
    with pytest.raises(FeatureValueError, match="segment is Int64"):
        trained.predict_proba(rows.with_columns(segment=pl.lit(1, dtype=pl.Int64)))
    with pytest.raises(FeatureValueError, match="tenure_days is String"):
        trained.predict_proba(rows.with_columns(tenure_days=pl.lit("long")))


def test_training_data_errors_say_what_and_how_many() -> None:
    frame = labelled_frame(100, 5, seed=1)
    nulls = frame.with_columns(
        churned=pl.when(pl.int_range(pl.len()) < 7).then(None).otherwise(pl.col("churned"))
    )
    with pytest.raises(TrainingDataError, match="churned: 7 of 500 rows"):
        train_model(nulls, FEATURES, CATEGORICAL, small_config())
    with pytest.raises(TrainingDataError, match="churned has 1 values other than 0 and 1 of 500"):
        labels = pl.when(pl.int_range(pl.len()) == 0).then(2).otherwise(pl.col("churned"))
        train_model(
            frame.with_columns(churned=labels.cast(pl.Int64)), FEATURES, CATEGORICAL, small_config()
        )
    with pytest.raises(TrainingDataError, match="churned is Float64"):
        train_model(
            frame.with_columns(pl.col("churned").cast(pl.Float64)),
            FEATURES,
            CATEGORICAL,
            small_config(),
        )
    with pytest.raises(TrainingDataError, match="3 duplicate"):
        train_model(pl.concat([frame, frame.head(3)]), FEATURES, CATEGORICAL, small_config())
    with pytest.raises(TrainingDataError, match=r"lacks columns \['noise'\]"):
        train_model(frame.drop("noise"), FEATURES, CATEGORICAL, small_config())
    with pytest.raises(TrainingDataError, match=r"categorical features \['plan'\]"):
        train_model(frame, FEATURES, [*CATEGORICAL, "plan"], small_config())
    no_churn = frame.with_columns(churned=pl.lit(False))
    with pytest.raises(TrainingDataError, match=r"the fit slice .* has 0 churners"):
        train_model(no_churn, FEATURES, CATEGORICAL, small_config())
    with pytest.raises(TrainingDataError, match="need more than the 1 validation"):
        train_model(frame, FEATURES, CATEGORICAL, small_config(holdout_snapshots=4))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="calibration_share"):
        small_config(calibration_share=1.0)
    with pytest.raises(ValueError, match="holdout_snapshots"):
        small_config(holdout_snapshots=0)
    params = small_config().lightgbm_params()
    assert params["deterministic"] is True and params["force_row_wise"] is True
    assert params["seed"] == params["bagging_seed"] == params["data_random_seed"] == 11
