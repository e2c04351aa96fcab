"""The promotion gate: a first model against the rule baseline, challengers vs the champion."""

from __future__ import annotations

import math

import pytest

from models.registry import gate

BASELINE = {"pr_auc": 0.30, "log_loss": 0.45}


def test_first_model_is_promoted_when_it_beats_the_rule_baseline() -> None:
    ok, why = gate({"pr_auc": 0.35}, None, BASELINE)
    assert ok
    assert "no champion yet" in why and "0.3500" in why and "0.3000" in why


@pytest.mark.parametrize("candidate", [0.30, 0.25])
def test_first_model_is_refused_when_it_does_not_beat_the_baseline(candidate: float) -> None:
    ok, why = gate({"pr_auc": candidate}, None, BASELINE)
    assert not ok
    assert "does not beat the rule baseline" in why


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [(0.406, True), (0.405, True), (0.4049, False), (0.40, False), (0.39, False)],
)
def test_challenger_must_beat_the_champion_by_the_margin(candidate: float, expected: bool) -> None:
    ok, why = gate({"pr_auc": candidate}, {"pr_auc": 0.40}, BASELINE, margin=0.005)
    assert ok is expected
    assert ("promoted" if expected else "less than the margin 0.0050") in why


@pytest.mark.parametrize(("champion", "candidate"), [(0.1, 0.105), (0.15, 0.155), (0.7, 0.705)])
def test_an_improvement_of_exactly_the_margin_passes_whatever_the_rounding(
    champion: float, candidate: float
) -> None:
    # 0.105 - 0.1 is 0.004999... in floating point
    ok, why = gate({"pr_auc": candidate}, {"pr_auc": champion}, {"pr_auc": 0.01}, margin=0.005)
    assert ok, why


def test_challenger_that_loses_to_the_baseline_is_refused_even_against_a_weak_champion() -> None:
    ok, why = gate({"pr_auc": 0.29}, {"pr_auc": 0.20}, BASELINE)
    assert not ok and "rule baseline" in why


def test_lower_is_better_metrics_reverse_the_comparison() -> None:
    ok, _ = gate({"log_loss": 0.40}, {"log_loss": 0.42}, BASELINE, metric="log_loss", margin=0.01)
    assert ok
    ok, why = gate(
        {"log_loss": 0.415}, {"log_loss": 0.42}, BASELINE, metric="log_loss", margin=0.01
    )
    assert not ok and "lower" in why


def test_missing_or_undefined_metrics_refuse() -> None:
    assert not gate({"pr_auc": math.nan}, None, BASELINE)[0]
    assert not gate({"pr_auc": None}, None, BASELINE)[0]
    assert not gate({"pr_auc": 0.5}, {"roc_auc": 0.7}, BASELINE)[0]
    assert "champion has no pr_auc" in gate({"pr_auc": 0.5}, {}, BASELINE)[1]
    with pytest.raises(ValueError, match="margin"):
        gate({"pr_auc": 0.5}, None, BASELINE, margin=-1)
