"""Calibration: PAV by hand, JSON round trips, and probabilities that get closer to the truth."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from models.calibration import CalibrationError, Calibrator, pool_adjacent_violators
from models.evaluate import expected_calibration_error
from models.train import holdout_rows, train_model
from tests.models.conftest import small_config
from tests.models.synthetic import CATEGORICAL, FEATURES, labelled_frame


def test_pool_adjacent_violators_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    lows, highs, means, counts = pool_adjacent_violators(x, y)
    np.testing.assert_array_equal(lows, [1.0, 4.0])
    np.testing.assert_array_equal(highs, [3.0, 5.0])
    np.testing.assert_allclose(means, [1 / 3, 1.0])
    np.testing.assert_array_equal(counts, [3, 2])


def test_isotonic_ties_share_a_block_and_interpolate_between_blocks() -> None:
    calibrator = Calibrator.fit([0.1, 0.1, 0.5, 0.9], [0, 1, 0, 1], "isotonic")
    assert calibrator.knots_x == [0.1, 0.5, 0.9]
    np.testing.assert_allclose(calibrator.knots_y, [1 / 3, 1 / 3, 1.0])
    low, high = calibrator.bounds
    np.testing.assert_allclose(calibrator.apply([0.0, 0.3, 0.7, 1.0]), [1 / 3, 1 / 3, 2 / 3, high])
    assert low == pytest.approx(0.1)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_json_round_trip_is_exact(method: str) -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 500)
    churned = (rng.uniform(0, 1, 500) < raw**2).astype(float)
    calibrator = Calibrator.fit(raw, churned, method)  # type: ignore[arg-type]
    restored = Calibrator.from_json(calibrator.to_json())
    assert restored == calibrator
    probe = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(restored.apply(probe), calibrator.apply(probe))
    assert Calibrator.from_json(json.loads(calibrator.to_json())) == calibrator


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_reduces_error_on_an_imbalanced_set(method: str) -> None:
    """Over-confident raw scores (a 5% base rate) become close to the true rates."""
    rng = np.random.default_rng(1)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        true_logit = rng.normal(-3.5, 1.2, n)
        true_p = 1 / (1 + np.exp(-true_logit))
        raw = 1 / (1 + np.exp(-(2.0 * true_logit + 3.0)))  # too extreme and too high
        return raw, (rng.uniform(0, 1, n) < true_p).astype(float)

    fit_raw, fit_y = sample(20_000)
    test_raw, test_y = sample(20_000)
    assert 0.02 < test_y.mean() < 0.08
    calibrator = Calibrator.fit(fit_raw, fit_y, method)  # type: ignore[arg-type]
    before = expected_calibration_error(test_y, test_raw)
    after = expected_calibration_error(test_y, calibrator.apply(test_raw))
    assert before > 0.04
    assert after < before / 5


def test_trained_model_is_calibrated_on_its_holdout() -> None:
    """On a 6% churn set, class weights distort the booster; the calibrator repairs it."""
    frame = labelled_frame(1500, 6, seed=8, base_logit=-3.8)
    assert 0.04 < frame["churned"].mean() < 0.09  # type: ignore[operator]
    model = train_model(frame, FEATURES, CATEGORICAL, small_config(scale_pos_weight=10.0))
    holdout = holdout_rows(frame, model)
    churned = holdout["churned"].cast(pl.Float64).to_numpy()
    raw_error = expected_calibration_error(churned, model.predict_raw(holdout))
    calibrated_error = expected_calibration_error(churned, model.predict_proba(holdout))
    assert raw_error > 0.04
    assert calibrated_error < raw_error / 2


def test_unreadable_calibrators_are_refused() -> None:
    with pytest.raises(CalibrationError, match="not readable"):
        Calibrator.from_json({"format": 1, "method": "platt"})
    with pytest.raises(CalibrationError, match="format"):
        Calibrator.from_json('{"format": 99}')
    with pytest.raises(CalibrationError, match="non-decreasing"):
        Calibrator.from_json(
            {
                "format": 1,
                "method": "isotonic",
                "n_rows": 3,
                "n_positive": 1,
                "knots_x": [0.0, 1.0],
                "knots_y": [0.9, 0.1],
            }
        )
    with pytest.raises(CalibrationError, match="not finite"):
        Calibrator.fit([0.1, float("nan")], [0, 1])
    with pytest.raises(CalibrationError, match="labels must be 0 or 1"):
        Calibrator.fit([0.1, 0.2], [0, 2])
