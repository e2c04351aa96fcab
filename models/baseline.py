"""A transparent rule baseline every model must beat.

Customers are ranked lexicographically by three signals, higher is riskier:
open complaints first, then unanswered contacts in the last 30 days, then days
since the last activity::

    score = open_complaints * 1e6 + min(unanswered_contacts_30d, 999) * 1e3
            + min(days_since_last_activity, 999)

Nulls: no open complaints or unanswered contacts recorded counts as 0; no
activity on record counts as 999 days (the riskiest value). Negative counts are
treated as 0.

The score is a ranking, not a probability. Ranking metrics (ROC AUC, PR AUC,
lift, precision and recall at capacity, profit) are computed on the raw score
(:meth:`RuleBaseline.score`), ties handled by expectation. Only for log loss,
Brier and calibration error, which read a probability, does
:class:`RuleBaseline` map scores to probabilities with an isotonic fit of the
churn rate on the training slice (never on the holdout): the map keeps the
score's order but merges thousands of distinct scores into a few dozen steps,
so ranking by it would tie customers the rule ranks apart and understate the
rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from models.calibration import Calibrator

FloatArray = npt.NDArray[np.float64]

RULE_COLUMNS = ("open_complaints", "unanswered_contacts_30d", "days_since_last_activity")
_CAP = 999.0


class BaselineError(ValueError):
    """The frame lacks what the rule baseline needs."""


def rule_score_expression() -> pl.Expr:
    """The rule baseline's score as a Polars expression (named ``rule_score``)."""
    open_complaints = pl.col("open_complaints").cast(pl.Float64).fill_null(0.0).clip(0.0, None)
    unanswered = pl.col("unanswered_contacts_30d").cast(pl.Float64).fill_null(0.0).clip(0.0, _CAP)
    idle_days = pl.col("days_since_last_activity").cast(pl.Float64).fill_null(_CAP).clip(0.0, _CAP)
    return (open_complaints * 1e6 + unanswered * 1e3 + idle_days).alias("rule_score")


def _check_columns(frame: pl.DataFrame) -> None:
    missing = [c for c in RULE_COLUMNS if c not in frame.columns]
    if missing:
        raise BaselineError(
            f"rule baseline needs columns {missing}, missing from a frame of {frame.height} rows"
        )
    for name in RULE_COLUMNS:
        dtype = frame.schema[name]
        if not (dtype.is_numeric() or isinstance(dtype, pl.Null)):
            raise BaselineError(f"rule baseline column {name!r} is {dtype}, expected numeric")
    for name in RULE_COLUMNS:
        nan_rows = frame.select(pl.col(name).cast(pl.Float64).is_nan().sum()).item()
        if nan_rows:
            raise BaselineError(
                f"rule baseline column {name!r} has {nan_rows} NaN values of {frame.height} rows"
            )


def rule_baseline_scores(frame: pl.DataFrame) -> FloatArray:
    """The rule score of every row (a ranking: higher is riskier, not a probability)."""
    _check_columns(frame)
    scores = frame.select(rule_score_expression()).to_series().to_numpy()
    return np.asarray(scores, dtype=np.float64)


class RuleBaseline:
    """The rule score with churn probabilities learnt from a training slice."""

    def __init__(self, calibrator: Calibrator) -> None:
        self.calibrator = calibrator

    @classmethod
    def fit(cls, training: pl.DataFrame, label_column: str = "churned") -> RuleBaseline:
        """Fit the score-to-probability map on training rows (never the holdout)."""
        if label_column not in training.columns:
            raise BaselineError(f"training frame of {training.height} rows has no {label_column!r}")
        nulls = training.get_column(label_column).null_count()
        if nulls:
            raise BaselineError(
                f"training column {label_column!r} has {nulls} null labels of "
                f"{training.height} rows"
            )
        if training.height == 0:
            raise BaselineError("rule baseline needs at least one training row")
        churned = training.get_column(label_column).cast(pl.Float64).to_numpy()
        return cls(Calibrator.fit(rule_baseline_scores(training), churned, "isotonic"))

    def score(self, frame: pl.DataFrame) -> FloatArray:
        """The raw rule score of the rows: what the rule ranks by (for ranking metrics)."""
        return rule_baseline_scores(frame)

    def predict_proba(self, frame: pl.DataFrame) -> FloatArray:
        """Churn probabilities of the rows (for log loss, Brier and ECE only).

        Non-decreasing in the rule score but coarser: rank by :meth:`score`.
        """
        return self.calibrator.apply(rule_baseline_scores(frame))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"rule_columns": list(RULE_COLUMNS), "calibrator": self.calibrator.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuleBaseline:
        """Inverse of :meth:`to_dict`."""
        return cls(Calibrator.from_json(data["calibrator"]))
