"""Drift guard: reference profiles, population stability index and the verdict."""

from __future__ import annotations

import json
import math
import pickle
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.drift import (
    EPSILON,
    MAX_CATEGORY_CHARS,
    SCORE_KEY,
    DriftProfileError,
    DriftStop,
    DriftVerdict,
    judge_drift,
    population_stability,
    reference_profile,
)


def frame(**columns: list[Any]) -> pl.DataFrame:
    """A feature frame with the given feature columns (dtypes inferred, strict)."""
    height = len(next(iter(columns.values())))
    return pl.DataFrame(
        {"snapshot_date": [None] * height, "customer_id": list(range(height)), **columns}
    )


def term(expected: float, actual: float) -> float:
    """One bin's PSI term with the module's epsilon floor."""
    e, a = max(expected, EPSILON), max(actual, EPSILON)
    return (a - e) * math.log(a / e)


def roundtrip(profile: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(profile, allow_nan=False))
    return loaded


# -- numeric features -----------------------------------------------------------------------


def test_identical_frame_gives_zero_psi() -> None:
    rng = np.random.default_rng(1)
    features = frame(
        tenure=list(rng.gamma(2.0, 30.0, 500)), segment=list(rng.choice(["a", "b"], 500))
    )
    scores = rng.beta(1, 5, 500)
    profile = reference_profile(features, ["tenure", "segment"], ["segment"], scores)
    psi = population_stability(profile, features, scores)
    assert psi == {SCORE_KEY: 0.0, "tenure": 0.0, "segment": 0.0}


def test_samples_of_one_distribution_give_psi_near_zero() -> None:
    rng = np.random.default_rng(2)
    training = frame(x=list(rng.normal(0, 1, 5000)))
    tonight = frame(x=list(rng.normal(0, 1, 5000)))
    profile = reference_profile(training, ["x"], [], None)
    assert population_stability(profile, tonight, None)["x"] < 0.02


def test_shifted_feature_matches_hand_computed_psi() -> None:
    training = frame(x=[float(v) for v in range(1, 11)])
    profile = reference_profile(training, ["x"], [], None, bins=2)
    entry = profile["features"]["x"]
    assert entry == {"kind": "numeric", "edges": [5.0], "shares": [0.5, 0.5], "null_share": 0.0}
    # tonight: 4..13, so 2 of 10 rows in (-inf, 5] and 8 in (5, inf)
    tonight = frame(x=[float(v) for v in range(4, 14)])
    psi = population_stability(profile, tonight, None)["x"]
    assert psi == pytest.approx(0.3 * math.log(4.0))
    assert psi > 0.25


def test_empty_bin_tonight_uses_epsilon_floor() -> None:
    training = frame(x=[float(v) for v in range(1, 11)])
    profile = reference_profile(training, ["x"], [], None, bins=2)
    tonight = frame(x=[float(v) for v in range(6, 16)])
    expected = term(0.5, 0.0) + term(0.5, 1.0) + term(0.0, 0.0)
    assert population_stability(profile, tonight, None)["x"] == pytest.approx(expected)


def test_normal_shift_of_one_deviation_is_large() -> None:
    rng = np.random.default_rng(3)
    profile = reference_profile(frame(x=list(rng.normal(0, 1, 4000))), ["x"], [], None)
    tonight = frame(x=list(rng.normal(1, 1, 4000)))
    assert population_stability(profile, tonight, None)["x"] > 0.25


def test_bins_are_closed_on_the_right_so_a_spike_keeps_its_own_bin() -> None:
    values = [0.0] * 6 + [1.0, 2.0, 3.0, 4.0]
    profile = reference_profile(frame(n=values), ["n"], [], None, bins=5)
    entry = profile["features"]["n"]
    assert entry["edges"] == [0.0, 2.0]
    assert entry["shares"] == pytest.approx([0.6, 0.2, 0.2])


def test_feature_all_null_tonight_has_high_psi() -> None:
    rng = np.random.default_rng(4)
    profile = reference_profile(frame(x=list(rng.normal(0, 1, 200))), ["x"], [], None)
    nulls = pl.DataFrame({"x": pl.Series([None] * 50, dtype=pl.Float64)})
    null_typed = pl.DataFrame({"x": [None] * 50})
    for tonight in (nulls, null_typed):
        psi = population_stability(profile, tonight, None)["x"]
        assert math.isfinite(psi)
        assert psi > 5


def test_constant_feature() -> None:
    profile = reference_profile(frame(c=[3.0] * 20), ["c"], [], None)
    entry = profile["features"]["c"]
    assert entry["edges"] == [3.0]
    assert entry["shares"] == [1.0, 0.0]
    assert population_stability(profile, frame(c=[3.0] * 7), None)["c"] == 0.0
    moved = population_stability(profile, frame(c=[4.0] * 7), None)["c"]
    assert moved == pytest.approx(2 * (1 - EPSILON) * math.log(1 / EPSILON))


def test_all_null_training_feature() -> None:
    training = pl.DataFrame({"x": pl.Series([None] * 10, dtype=pl.Float64)})
    profile = reference_profile(training, ["x"], [], None)
    assert profile["features"]["x"] == {
        "kind": "numeric",
        "edges": [],
        "shares": [0.0],
        "null_share": 1.0,
    }
    assert population_stability(profile, training, None)["x"] == 0.0
    assert population_stability(profile, frame(x=[1.0, 2.0]), None)["x"] > 5


def test_nan_and_infinity_are_safe() -> None:
    values = [math.nan, math.inf, -math.inf, None, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    profile = reference_profile(pl.DataFrame({"x": values}), ["x"], [], None, bins=2)
    entry = profile["features"]["x"]
    text = json.dumps(profile, allow_nan=False)  # strict JSON: no NaN, no Infinity
    assert "Infinity" not in text
    assert entry["edges"] == [3.0]
    # NaN and null are missing; -inf falls in the lowest bin, +inf in the highest
    assert entry["null_share"] == pytest.approx(0.2)
    assert entry["shares"] == pytest.approx([0.4, 0.4])
    tonight = pl.DataFrame({"x": [math.inf, math.inf, math.nan, -math.inf]})
    psi = population_stability(profile, tonight, None)["x"]
    assert math.isfinite(psi)
    assert psi > 0


def test_integer_and_boolean_columns_count_as_numeric() -> None:
    features = pl.DataFrame({"n": [1, 2, None, 4], "flag": [True, False, None, True]})
    profile = reference_profile(features, ["n", "flag"], [], None, bins=2)
    assert population_stability(profile, features, None) == {"n": 0.0, "flag": 0.0}


# -- categorical features -------------------------------------------------------------------


def test_categorical_profile_keeps_top_categories_other_and_null() -> None:
    training = frame(segment=["a"] * 6 + ["b"] * 3 + [None])
    profile = reference_profile(training, ["segment"], ["segment"], None, max_categories=1)
    assert profile["features"]["segment"] == {
        "kind": "categorical",
        "categories": ["a"],
        "shares": [0.6],
        "other_share": pytest.approx(0.3),
        "null_share": 0.1,
    }
    tonight = frame(segment=["a"] * 5 + ["c"] * 5)
    expected = term(0.6, 0.5) + term(0.3, 0.5) + term(0.1, 0.0)
    assert population_stability(profile, tonight, None)["segment"] == pytest.approx(expected)


def test_category_seen_only_tonight_counts_as_other() -> None:
    training = frame(channel=["phone", "email"] * 50)
    profile = reference_profile(training, ["channel"], ["channel"], None)
    tonight = frame(channel=["phone", "email", "tiktok", "tiktok"] * 25)
    expected = term(0.5, 0.25) * 2 + term(0.0, 0.5) + term(0.0, 0.0)
    psi = population_stability(profile, tonight, None)["channel"]
    assert psi == pytest.approx(expected)
    assert psi > 0.25


def test_categorical_ties_break_by_name_and_dtypes_are_accepted() -> None:
    training = pl.DataFrame({"plan": pl.Series(["b", "a", "c", "a", "b"], dtype=pl.Categorical)})
    profile = reference_profile(training, ["plan"], ["plan"], None, max_categories=2)
    assert profile["features"]["plan"]["categories"] == ["a", "b"]
    tonight = pl.DataFrame({"plan": pl.Series(["b", "a", "c", "a", "b"], dtype=pl.String)})
    assert population_stability(profile, tonight, None)["plan"] == 0.0


def test_profile_size_is_bounded() -> None:
    long_names = [f"{'x' * MAX_CATEGORY_CHARS}{i}" for i in range(300)]
    short_names = [f"c{i}" for i in range(300)]
    training = frame(free_text=long_names * 2 + short_names)
    profile = reference_profile(training, ["free_text"], ["free_text"], None)
    entry = profile["features"]["free_text"]
    assert len(entry["categories"]) == 20
    assert all(len(name) <= MAX_CATEGORY_CHARS for name in entry["categories"])
    assert len(json.dumps(entry)) < 4000


# -- score, round trip, missing and extra columns -------------------------------------------


def test_score_psi() -> None:
    rng = np.random.default_rng(5)
    features = frame(x=list(rng.normal(0, 1, 2000)))
    profile = reference_profile(features, ["x"], [], rng.beta(1, 6, 2000))
    assert profile["score"]["rows"] == 2000
    same = population_stability(profile, features, rng.beta(1, 6, 2000))[SCORE_KEY]
    moved = population_stability(profile, features, rng.beta(3, 3, 2000))[SCORE_KEY]
    assert same < 0.05
    assert moved > 0.25
    assert SCORE_KEY not in population_stability(profile, features, None)
    no_score = reference_profile(features, ["x"], [], None)
    assert no_score["score"] is None
    assert SCORE_KEY not in population_stability(no_score, features, rng.beta(1, 6, 10))


def test_json_round_trip_gives_the_same_psi() -> None:
    rng = np.random.default_rng(6)
    training = frame(
        x=[*rng.normal(0, 1, 300), None, math.nan],
        segment=[*rng.choice(["a", "b", "c"], 300), None, "d"],
    )
    scores = rng.beta(1, 6, 302)
    profile = reference_profile(training, ["x", "segment"], ["segment"], scores)
    tonight = frame(x=list(rng.normal(0.3, 1, 100)), segment=list(rng.choice(["a", "b", "e"], 100)))
    tonight_scores = rng.beta(1, 5, 100)
    loaded = roundtrip(profile)
    assert loaded == profile
    assert population_stability(loaded, tonight, tonight_scores) == population_stability(
        profile, tonight, tonight_scores
    )


def test_missing_feature_is_nan_and_unknown_columns_are_ignored() -> None:
    profile = reference_profile(frame(x=[1.0, 2.0], y=[1.0, 2.0]), ["x", "y"], [], None)
    psi = population_stability(profile, frame(x=[1.0, 2.0], extra=[5.0, 6.0]), None)
    assert set(psi) == {"x", "y"}
    assert psi["x"] == 0.0
    assert math.isnan(psi["y"])
    verdict = judge_drift(psi, warn=0.1, stop=0.5)
    assert verdict.missing == ["y"]
    assert verdict.stopped == ["y"]
    assert verdict.status == "warn"


# -- bad input ------------------------------------------------------------------------------


def test_bad_training_input_is_named() -> None:
    with pytest.raises(ValueError, match="0 rows"):
        reference_profile(pl.DataFrame({"x": pl.Series([], dtype=pl.Float64)}), ["x"], [], None)
    with pytest.raises(ValueError, match=r"\['y'\] are missing"):
        reference_profile(frame(x=[1.0]), ["x", "y"], [], None)
    with pytest.raises(ValueError, match=r"'segment' \(2 rows\) is String.*numeric"):
        reference_profile(frame(segment=["a", "b"]), ["segment"], [], None)
    with pytest.raises(ValueError, match="reserved"):
        reference_profile(pl.DataFrame({SCORE_KEY: [1.0]}), [SCORE_KEY], [], None)
    with pytest.raises(ValueError, match="bins"):
        reference_profile(frame(x=[1.0]), ["x"], [], None, bins=1)
    with pytest.raises(ValueError, match="shape"):
        reference_profile(frame(x=[1.0]), ["x"], [], np.zeros((2, 2)))


def test_bad_tonight_input_is_named() -> None:
    profile = reference_profile(frame(segment=["a", "b"]), ["segment"], ["segment"], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"'segment' \(3 rows\) is Int64.*categorical"):
        population_stability(profile, frame(segment=[1, 2, 3]), None)
    with pytest.raises(ValueError, match="0 rows"):
        population_stability(profile, frame(segment=[]).cast({"segment": pl.String}), None)
    with pytest.raises(ValueError, match="0 rows"):
        population_stability(profile, frame(segment=["a"]), np.array([]))


@pytest.mark.parametrize(
    "change",
    [
        {"format": 2},
        {"features": None},
        {"features": {"x": {"kind": "numeric", "edges": [1.0], "shares": [1.0], "null_share": 0}}},
        {
            "features": {
                "x": {
                    "kind": "numeric",
                    "edges": [2.0, 1.0],
                    "shares": [0.5, 0.5, 0.0],
                    "null_share": 0,
                }
            }
        },
        {"features": {"x": {"kind": "numeric", "edges": [], "shares": [0.5], "null_share": 0}}},
        {"features": {"x": {"kind": "histogram"}}},
        {"features": {"x": {"kind": "categorical", "categories": ["a"], "shares": [1.0]}}},
    ],
)
def test_malformed_profile_is_rejected(change: dict[str, Any]) -> None:
    profile = {**reference_profile(frame(x=[1.0, 2.0]), ["x"], [], None), **change}
    with pytest.raises(DriftProfileError):
        population_stability(profile, frame(x=[1.0]), None)


# -- verdict --------------------------------------------------------------------------------


def test_judge_ok_warn_stop() -> None:
    ok = judge_drift({SCORE_KEY: 0.01, "a": 0.05}, warn=0.1, stop=0.5)
    assert (ok.status, ok.warned, ok.stopped) == ("ok", [], [])
    warn = judge_drift({SCORE_KEY: 0.01, "a": 0.1, "b": 0.3}, warn=0.1, stop=0.5)
    assert (warn.status, warn.warned, warn.stopped) == ("warn", ["b", "a"], [])
    score = judge_drift({SCORE_KEY: 0.5, "a": 0.0}, warn=0.1, stop=0.5)
    assert (score.status, score.stopped) == ("stop", [SCORE_KEY])
    assert "score" in score.reason


def test_features_stop_only_when_watched_or_several() -> None:
    one = {"a": 0.9, "b": 0.2, "c": 0.0}
    assert judge_drift(one, warn=0.1, stop=0.5).status == "warn"
    assert judge_drift(one, warn=0.1, stop=0.5, watch=["a"]).status == "stop"
    assert judge_drift(one, warn=0.1, stop=0.5, watch=["b", "zz"]).status == "warn"
    assert judge_drift(one, warn=0.1, stop=0.5, stop_count=1).status == "stop"
    three = {"a": 0.9, "b": 0.6, "c": math.nan, "d": 0.0}
    verdict = judge_drift(three, warn=0.1, stop=0.5)
    assert verdict.status == "stop"
    assert verdict.stopped == ["c", "a", "b"]
    assert "3 features" in verdict.reason


def test_judge_rejects_bad_thresholds_and_values() -> None:
    with pytest.raises(ValueError, match="warn <= stop"):
        judge_drift({"a": 0.1}, warn=0.5, stop=0.1)
    with pytest.raises(ValueError, match="warn <= stop"):
        judge_drift({"a": 0.1}, warn=-0.1, stop=0.1)
    with pytest.raises(ValueError, match="negative"):
        judge_drift({"a": -0.1}, warn=0.1, stop=0.5)
    with pytest.raises(ValueError, match="stop_count"):
        judge_drift({"a": 0.1}, warn=0.1, stop=0.5, stop_count=0)
    assert judge_drift({}, warn=0.1, stop=0.5).status == "ok"


def test_verdict_to_dict_summary_and_stop_exception() -> None:
    psi = {SCORE_KEY: 0.7, "tenure": 1.25, "segment": 0.2, "calls": 0.01, "gone": math.nan}
    verdict = judge_drift(psi, warn=0.1, stop=0.5)
    assert verdict.status == "stop"
    record = verdict.to_dict()
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert record["psi"]["gone"] is None
    assert record["psi_max"] == 1.25
    assert record["stopped"] == ["gone", "tenure", SCORE_KEY]
    lines = verdict.summary_lines()
    assert lines[0].startswith("drift stop: the score's PSI 0.700")
    assert "score PSI 0.700" in lines
    assert "features at stop level (1): tenure 1.250" in lines
    assert "features at warn level (1): segment 0.200" in lines
    assert "features missing tonight (1): gone" in lines
    assert verdict.worst(2) == [("gone", psi["gone"]), ("tenure", 1.25)]
    error = DriftStop(verdict)
    assert "tenure 1.250" in str(error)
    assert isinstance(error, RuntimeError)
    restored = pickle.loads(pickle.dumps(error))
    assert str(restored) == str(error)
    assert restored.verdict.to_dict() == record


def test_verdict_defaults_keep_the_short_form() -> None:
    verdict = DriftVerdict("ok", {"a": 0.0}, [], [])
    assert verdict.to_dict()["missing"] == []
    assert verdict.summary_lines() == ["drift ok"]


def test_end_to_end_with_thresholds_from_settings() -> None:
    rng = np.random.default_rng(7)
    training = frame(x=list(rng.normal(0, 1, 1000)), segment=list(rng.choice(["a", "b"], 1000)))
    profile = roundtrip(reference_profile(training, ["x", "segment"], ["segment"], None))
    tonight = frame(x=[None] * 200, segment=list(rng.choice(["a", "b"], 200)))
    verdict = judge_drift(
        population_stability(profile, tonight, None), warn=0.1, stop=0.5, watch=["x"]
    )
    assert verdict.status == "stop"
    with pytest.raises(DriftStop, match=r"watched features at or above 0.5: x"):
        raise DriftStop(verdict)


# -- properties -----------------------------------------------------------------------------

numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 3).map(float),
)
labels = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e"]))


@st.composite
def feature_frames(draw: st.DrawFn) -> pl.DataFrame:
    height = draw(st.integers(1, 25))
    return pl.DataFrame(
        {
            "x": pl.Series(
                draw(st.lists(numbers, min_size=height, max_size=height)), dtype=pl.Float64
            ),
            "segment": pl.Series(
                draw(st.lists(labels, min_size=height, max_size=height)), dtype=pl.String
            ),
        }
    )


@settings(max_examples=60, deadline=None)
@given(
    training=feature_frames(),
    tonight=feature_frames(),
    bins=st.integers(2, 12),
    max_categories=st.integers(1, 4),
)
def test_psi_is_finite_and_not_negative(
    training: pl.DataFrame, tonight: pl.DataFrame, bins: int, max_categories: int
) -> None:
    profile = reference_profile(
        training,
        ["x", "segment"],
        ["segment"],
        training.get_column("x").to_numpy(),
        bins=bins,
        max_categories=max_categories,
    )
    psi = population_stability(roundtrip(profile), tonight, tonight.get_column("x").to_numpy())
    assert set(psi) == {SCORE_KEY, "x", "segment"}
    assert all(math.isfinite(value) and value >= 0 for value in psi.values())
    assert population_stability(profile, training, training.get_column("x").to_numpy()) == {
        SCORE_KEY: 0.0,
        "x": 0.0,
        "segment": 0.0,
    }
