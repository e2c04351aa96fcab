"""The rule baseline: lexicographic order, nulls, and probabilities from the training slice."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.baseline import BaselineError, RuleBaseline, rule_baseline_scores


def _rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "open_complaints": [0, 1, 0, 0, 2, None, 0],
            "unanswered_contacts_30d": [0, 0, 5, 5, 0, 0, 2000],
            "days_since_last_activity": [3.0, 0.0, 1.0, None, 0.0, 10.0, 0.0],
        },
        schema_overrides={"open_complaints": pl.Int64, "unanswered_contacts_30d": pl.Int64},
    )


def test_rule_score_is_lexicographic() -> None:
    scores = rule_baseline_scores(_rows())
    np.testing.assert_array_equal(scores, [3.0, 1e6, 5_001.0, 5_999.0, 2e6, 10.0, 999_000.0])
    # one open complaint outranks any number of unanswered contacts and idle days
    assert scores[1] > scores[6] > scores[3] > scores[2] > scores[5] > scores[0]


def test_rule_baseline_needs_its_columns() -> None:
    with pytest.raises(BaselineError, match=r"\['days_since_last_activity'\].*7 rows"):
        rule_baseline_scores(_rows().drop("days_since_last_activity"))
    with pytest.raises(BaselineError, match="open_complaints' is String"):
        rule_baseline_scores(_rows().with_columns(open_complaints=pl.lit("a")))


def test_rule_probabilities_come_from_the_training_slice() -> None:
    training = pl.DataFrame(
        {
            "open_complaints": [0, 0, 0, 0, 1, 1, 2, 2],
            "unanswered_contacts_30d": [0] * 8,
            "days_since_last_activity": [0.0] * 8,
            "churned": [False, False, False, True, False, True, True, True],
        }
    )
    baseline = RuleBaseline.fit(training)
    holdout = training.drop("churned")
    probabilities = baseline.predict_proba(holdout)
    np.testing.assert_allclose(probabilities[[0, 4, 6]], [0.25, 0.5, 1 - 0.5 / 9])
    restored = RuleBaseline.from_dict(baseline.to_dict())
    np.testing.assert_array_equal(restored.predict_proba(holdout), probabilities)
    with pytest.raises(BaselineError, match="1 null labels of 8 rows"):
        RuleBaseline.fit(
            training.with_columns(
                churned=pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("churned"))
            )
        )
