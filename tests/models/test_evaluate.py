"""Metrics on hand-computed examples, tie handling, and comparisons on the same rows."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

from models.baseline import RuleBaseline, rule_baseline_scores
from models.evaluate import (
    CHAMPION,
    MODEL,
    MODEL_UNCALIBRATED,
    PROBABILITY_METRICS,
    RANKING_METRICS,
    RULE_BASELINE,
    EvaluationError,
    EvaluationReport,
    HoldoutEvaluation,
    compare,
    evaluate,
    expected_calibration_error,
    expected_top_k,
    training_overlap,
)
from models.train import TrainedModel, training_rows

P = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
Y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0], dtype=float)
VALUE = np.array([100, 50, 80, 200, 10, 10, 10, 10, 10, 10], dtype=float)


def _hand_metrics() -> dict[str, float]:
    return evaluate(
        Y, P, value=VALUE, capacity=3, offer_cost=10.0, success_rate=0.5, horizon_months=2.0
    )


def test_top_k_metrics_by_hand() -> None:
    m = _hand_metrics()
    assert m["n_rows"] == 10 and m["n_churned"] == 3
    assert m["base_rate"] == pytest.approx(0.3)
    # top decile = 1 row, a churner: rate 1 / base rate 0.3
    assert m["top_decile_lift"] == pytest.approx(1 / 0.3)
    assert m["capacity"] == 3
    assert m["precision_at_capacity"] == pytest.approx(2 / 3)
    assert m["recall_at_capacity"] == pytest.approx(2 / 3)


def test_profit_by_hand() -> None:
    """Each contacted churner is worth 0.5 * value * 2 = value; each contact costs 10.

    k=1: 100-10=90, k=2: 150-20=130, k=3: 150-30=120, k=4: 350-40=310, k=5: 300, ...
    """
    m = _hand_metrics()
    assert m["expected_profit_at_capacity"] == pytest.approx(120.0)
    assert m["best_k"] == 4
    assert m["expected_profit_at_best_k"] == pytest.approx(310.0)


def test_ranking_and_probability_metrics_by_hand_and_against_sklearn() -> None:
    m = _hand_metrics()
    # churners rank 10, 9 and 7 of 10: (26 - 6) / (3 * 7)
    assert m["roc_auc"] == pytest.approx(20 / 21)
    # precision 1 at recall 1/3 and 2/3, 3/4 at recall 1
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["pr_auc"] == pytest.approx(average_precision_score(Y, P))
    assert m["log_loss"] == pytest.approx(sk_log_loss(Y, P))
    assert m["brier"] == pytest.approx(brier_score_loss(Y, P))
    assert m["mean_probability"] == pytest.approx(P.mean())


def test_metrics_with_ties_match_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(4)
    p = np.round(rng.uniform(0, 1, 400), 1)  # many ties
    y = (rng.uniform(0, 1, 400) < p).astype(float)
    m = evaluate(
        y, p, value=np.ones(400), capacity=40, offer_cost=0, success_rate=1, horizon_months=1
    )
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))


def test_ece_uses_equal_frequency_bins() -> None:
    p = np.array([0.1] * 5 + [0.9] * 5)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0], dtype=float)
    # bin 1: mean p 0.1, rate 0.2; bin 2: mean p 0.9, rate 0.8
    assert expected_calibration_error(y, p, bins=2) == pytest.approx(0.1)
    assert expected_calibration_error(np.zeros(4), np.zeros(4)) == 0.0


def test_ties_count_their_average_not_row_order() -> None:
    y = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    flat = np.full(10, 0.5)
    m = evaluate(
        y, flat, value=np.ones(10), capacity=5, offer_cost=0, success_rate=1, horizon_months=1
    )
    assert m["precision_at_capacity"] == pytest.approx(0.2)
    assert m["recall_at_capacity"] == pytest.approx(0.5)
    assert m["top_decile_lift"] == pytest.approx(1.0)
    assert m["roc_auc"] == pytest.approx(0.5)
    np.testing.assert_allclose(
        expected_top_k(np.array([3.0, 1.0, 1.0, 0.0]), np.array([1.0, 1.0, 0.0, 1.0])),
        [0.0, 1.0, 1.5, 2.0, 3.0],
    )


def test_undefined_metrics_are_nan_and_inputs_are_checked() -> None:
    m = evaluate(
        np.zeros(5),
        np.full(5, 0.1),
        value=np.ones(5),
        capacity=2,
        offer_cost=1,
        success_rate=0.3,
        horizon_months=1,
    )
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert math.isnan(m["top_decile_lift"]) and math.isnan(m["recall_at_capacity"])
    assert m["best_k"] == 0 and m["expected_profit_at_best_k"] == 0
    with pytest.raises(EvaluationError, match="not in \\[0, 1\\]"):
        evaluate(Y, P * 2, value=VALUE, capacity=3, offer_cost=1, success_rate=1, horizon_months=1)
    with pytest.raises(EvaluationError, match="same rows"):
        evaluate(Y, P[:5], value=VALUE, capacity=3, offer_cost=1, success_rate=1, horizon_months=1)


def _holdout() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "snapshot_date": [date(2026, 5, 1)] * 10 + [date(2026, 6, 1)] * 10,
            "customer_id": list(range(10)) * 2,
            "churned": list(Y.astype(bool)) * 2,
            "segment": ["smb", "consumer"] * 9 + [None, None],
            "customer_value": [*VALUE[:-1].tolist(), None, *VALUE.tolist()],
        }
    )


def test_compare_scores_everyone_on_the_same_rows() -> None:
    holdout = _holdout()
    scores = {"a": np.tile(P, 2), "b": np.tile(P[::-1], 2)}
    report = compare(holdout, scores, capacity=3, offer_cost=10, success_rate=0.5, horizon_months=2)
    assert report.scorers == ["a", "b"]
    assert report.overall["a"]["n_rows"] == report.overall["b"]["n_rows"] == 20
    assert report.overall["a"]["capacity"] == 6  # 3 per snapshot, 2 snapshots
    assert list(report.by_date) == ["2026-05-01", "2026-06-01"]
    assert report.by_date["2026-05-01"]["a"]["capacity"] == 3
    assert report.by_date["2026-06-01"]["a"]["expected_profit_at_best_k"] == pytest.approx(310)
    assert set(report.by_segment) == {"smb", "consumer", "(missing)"}
    assert report.by_segment["(missing)"]["a"]["n_rows"] == 2
    assert sum(t["a"]["n_rows"] for t in report.by_segment.values()) == 20
    assert any("1 of 20 rows have no customer_value" in n for n in report.notes)
    assert any("2 of 20 rows have no segment" in n for n in report.notes)
    assert report.overall["a"]["roc_auc"] > report.overall["b"]["roc_auc"]


def test_report_round_trips_through_json() -> None:
    report = compare(
        _holdout(),
        {"a": np.tile(P, 2)},
        capacity=3,
        offer_cost=10,
        success_rate=0.5,
        horizon_months=2,
    )
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)
    restored = EvaluationReport.from_dict(json.loads(text))
    assert restored.holdout_dates == report.holdout_dates
    assert restored.overall["a"]["pr_auc"] == report.overall["a"]["pr_auc"]
    assert restored.metrics("a")["roc_auc"] == report.metrics("a")["roc_auc"]
    with pytest.raises(KeyError, match="have \\['a'\\]"):
        report.metrics("champion")


def test_compare_refuses_bad_inputs() -> None:
    holdout = _holdout()
    with pytest.raises(EvaluationError, match="scorer 'a' has 3 scores for 20 holdout rows"):
        compare(
            holdout,
            {"a": [0.1, 0.2, 0.3]},
            capacity=3,
            offer_cost=1,
            success_rate=1,
            horizon_months=1,
        )
    with pytest.raises(EvaluationError, match="no column 'customer_value'"):
        compare(
            holdout.drop("customer_value"),
            {"a": np.tile(P, 2)},
            capacity=3,
            offer_cost=1,
            success_rate=1,
            horizon_months=1,
        )
    nulls = holdout.with_columns(churned=pl.lit(None, dtype=pl.Boolean))
    with pytest.raises(EvaluationError, match="20 null labels"):
        compare(
            nulls, {"a": np.tile(P, 2)}, capacity=3, offer_cost=1, success_rate=1, horizon_months=1
        )


def test_candidate_champion_and_baseline_on_the_same_holdout(
    trained: TrainedModel, evaluated_with_champion: HoldoutEvaluation
) -> None:
    result = evaluated_with_champion
    assert result.report.scorers == [MODEL, MODEL_UNCALIBRATED, CHAMPION, RULE_BASELINE]
    assert result.holdout.height == 1200
    assert set(result.holdout["snapshot_date"].unique()) == set(trained.holdout_dates)
    for scores in result.scores.values():
        assert scores.shape == (1200,)
    overall = result.report.overall
    assert overall[MODEL]["pr_auc"] > overall[RULE_BASELINE]["pr_auc"]
    assert overall[MODEL]["roc_auc"] == pytest.approx(overall[MODEL_UNCALIBRATED]["roc_auc"])
    assert set(result.report.by_segment) == {"consumer", "enterprise", "smb", "(missing)"}


def test_a_ranking_score_drives_the_ranking_metrics_and_probabilities_the_rest() -> None:
    """A scorer with coarse probabilities but a fine ranking is judged on its ranking."""
    coarse = np.where(P >= 0.5, 0.6, 0.1)  # two steps: ties five rows apart in each
    ranked_by_p = _hand_metrics()
    m = evaluate(
        Y,
        coarse,
        value=VALUE,
        capacity=3,
        offer_cost=10.0,
        success_rate=0.5,
        horizon_months=2.0,
        rank_score=P * 1000.0,  # any finite scale: only the order counts
    )
    for metric in RANKING_METRICS:
        assert m[metric] == pytest.approx(ranked_by_p[metric]), metric
    assert m["log_loss"] == pytest.approx(sk_log_loss(Y, coarse))
    assert m["brier"] == pytest.approx(brier_score_loss(Y, coarse))
    assert m["ece"] == pytest.approx(expected_calibration_error(Y, coarse))
    assert m["mean_probability"] == pytest.approx(coarse.mean())
    ranked_by_steps = evaluate(
        Y, coarse, value=VALUE, capacity=3, offer_cost=10.0, success_rate=0.5, horizon_months=2.0
    )
    assert ranked_by_steps["roc_auc"] < m["roc_auc"]
    with pytest.raises(EvaluationError, match="10 labels and 3 ranking scores"):
        evaluate(
            Y,
            coarse,
            value=VALUE,
            capacity=3,
            offer_cost=1,
            success_rate=1,
            horizon_months=1,
            rank_score=P[:3],
        )
    with pytest.raises(EvaluationError, match="1 of 10 ranking scores are not finite"):
        evaluate(
            Y,
            coarse,
            value=VALUE,
            capacity=3,
            offer_cost=1,
            success_rate=1,
            horizon_months=1,
            rank_score=np.append(P[:-1], np.inf),
        )


def test_compare_uses_ranking_scores_overall_per_date_and_per_segment() -> None:
    holdout = _holdout()
    coarse = np.tile(np.where(P >= 0.5, 0.6, 0.1), 2)
    report = compare(
        holdout,
        {"fine": np.tile(P, 2), "coarse": coarse},
        rank_scores={"coarse": np.tile(P, 2) + 5.0},
        capacity=3,
        offer_cost=10,
        success_rate=0.5,
        horizon_months=2,
    )
    for table in (report.overall, *report.by_date.values(), *report.by_segment.values()):
        for metric in RANKING_METRICS:
            assert table["coarse"][metric] == pytest.approx(table["fine"][metric], nan_ok=True)
        assert table["coarse"]["mean_probability"] != pytest.approx(
            table["fine"]["mean_probability"]
        )
    with pytest.raises(EvaluationError, match="ranking scores for 'other'"):
        compare(
            holdout,
            {"fine": np.tile(P, 2)},
            rank_scores={"other": np.tile(P, 2)},
            capacity=3,
            offer_cost=1,
            success_rate=1,
            horizon_months=1,
        )


def test_rule_baseline_is_ranked_by_its_raw_score_not_its_isotonic_steps(
    labelled: pl.DataFrame, trained: TrainedModel, evaluated: HoldoutEvaluation
) -> None:
    """The isotonic map merges the rule's distinct scores into steps; ranking by the steps
    ties customers the rule ranks apart and understates the rule."""
    result = evaluated
    holdout = result.holdout
    y = holdout["churned"].cast(pl.Float64).to_numpy()
    raw = rule_baseline_scores(holdout)
    steps = RuleBaseline.fit(training_rows(labelled, trained)).predict_proba(holdout)
    assert np.unique(raw).size > 3 * np.unique(steps).size  # the map really is coarser
    np.testing.assert_array_equal(result.rank_scores[RULE_BASELINE], raw)
    np.testing.assert_array_equal(result.scores[RULE_BASELINE], steps)
    np.testing.assert_array_equal(result.ranking(RULE_BASELINE), raw)
    np.testing.assert_array_equal(result.ranking(MODEL), result.scores[MODEL])
    rule = result.report.overall[RULE_BASELINE]
    value = holdout["customer_value"].cast(pl.Float64).fill_null(0.0).to_numpy()
    honest = evaluate(
        y,
        steps,
        value=value,
        capacity=120,
        offer_cost=10,
        success_rate=0.3,
        horizon_months=1,
        rank_score=raw,
    )
    for metric in (*RANKING_METRICS, *PROBABILITY_METRICS):
        assert rule[metric] == pytest.approx(honest[metric]), metric
    assert rule["roc_auc"] == pytest.approx(roc_auc_score(y, raw))
    assert rule["pr_auc"] == pytest.approx(average_precision_score(y, raw))
    assert rule["log_loss"] == pytest.approx(sk_log_loss(y, steps))
    # Ranked by its isotonic steps the rule would look worse than it is.
    assert roc_auc_score(y, steps) < rule["roc_auc"]
    assert any("raw rule score" in note for note in result.report.notes)
    for day in result.report.by_date:
        mask = (holdout["snapshot_date"].cast(pl.String) == day).to_numpy()
        assert result.report.by_date[day][RULE_BASELINE]["roc_auc"] == pytest.approx(
            roc_auc_score(y[mask], raw[mask])
        )


def test_training_overlap_finds_dates_whose_labels_reach_the_holdout() -> None:
    holdout = [date(2026, 5, 1), date(2026, 6, 1)]
    train = [date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1)]
    # 2026-04-01 + 30 days = 2026-05-01: observed by the holdout's start, not after it.
    assert training_overlap(train, 30, holdout) == [date(2026, 5, 1)]
    assert training_overlap(train, 31, holdout) == [date(2026, 4, 1), date(2026, 5, 1)]
    assert training_overlap(train[:3], 30, holdout) == []
    assert training_overlap(train, 30, []) == []
    assert training_overlap([date(2026, 8, 1)], 30, holdout) == [date(2026, 8, 1)]


def test_ece_keeps_tied_probabilities_in_one_bin_whatever_the_row_order() -> None:
    rng = np.random.default_rng(3)
    p = np.array([0.1] * 6 + [0.3] * 6)
    y = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1], dtype=float)
    # Equal-frequency bins of 4 would cut both runs of ties; they stay whole instead.
    expected = expected_calibration_error(y, p, bins=3)
    assert expected == pytest.approx(0.5 * abs(0.5 - 0.1) + 0.5 * abs(1 / 3 - 0.3))
    for _ in range(20):
        order = rng.permutation(p.size)
        assert expected_calibration_error(y[order], p[order], bins=3) == pytest.approx(expected)
