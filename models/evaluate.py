"""Honest evaluation on the time-based holdout, always against references on the same rows.

:func:`evaluate` computes one scorer's metrics; :func:`compare` evaluates several
scorers (the candidate model, the current champion, the rule baseline) on the same
holdout rows, overall, per snapshot date and per segment.

Top-k metrics (lift, precision and recall at capacity, profit) rank customers by
score, highest first. Ties are resolved by expectation: inside a group of equal
scores every order is equally likely, so a cut through the group counts the
group's average. No scorer gains or loses from the order of rows in the frame.

A scorer may rank by one score and state probabilities with another: the rule
baseline ranks customers by its raw rule score (thousands of distinct values)
and gives probabilities through an isotonic map fitted on the training dates
(a few dozen steps). Ranking metrics (ROC AUC, PR AUC, lift, precision and
recall at capacity, profit) then use the ranking score, and probability metrics
(log loss, Brier, ECE, mean probability) the probabilities. Ranking the rule by
its isotonic steps would tie customers the rule ranks apart and understate it.

Profit of contacting the top ``k``, using the realised labels of the holdout::

    profit(k) = sum over the top k of churned * success_rate * value * horizon_months
                - offer_cost * k

``value`` is the customer's monthly value; a contacted churner is kept with
probability ``success_rate`` and then pays ``value`` for ``horizon_months``.
Customers who would have stayed anyway bring nothing but the offer cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

if TYPE_CHECKING:
    from models.train import TrainedModel

FloatArray = npt.NDArray[np.float64]

MODEL = "model"
MODEL_UNCALIBRATED = "model_uncalibrated"
CHAMPION = "champion"
RULE_BASELINE = "rule_baseline"

RANKING_METRICS = (
    "roc_auc",
    "pr_auc",
    "top_decile_lift",
    "precision_at_capacity",
    "recall_at_capacity",
    "expected_profit_at_capacity",
    "best_k",
    "expected_profit_at_best_k",
)
"""Metrics that depend only on the order of the scores (a scorer's ranking score)."""
PROBABILITY_METRICS = ("mean_probability", "log_loss", "brier", "ece")
"""Metrics that read the scores as probabilities."""

ECE_BINS = 10
"""Expected calibration error uses this many equal-frequency bins."""

LOWER_IS_BETTER = frozenset({"log_loss", "brier", "ece"})
"""Metrics where a smaller value is better; for all others larger is better."""

MISSING_SEGMENT = "(missing)"
_EPS = 1e-15


class EvaluationError(ValueError):
    """Inputs that cannot be evaluated."""


def _array(values: npt.ArrayLike, name: str) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def expected_top_k(scores: FloatArray, weights: FloatArray) -> FloatArray:
    """``c[k]``: expected sum of ``weights`` over the ``k`` highest scores, k = 0..n.

    Within a group of tied scores the order is taken as random, so the sum grows
    linearly through the group.
    """
    n = scores.size
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])])
    if n == 0:
        return cumulative
    new_group = np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], n)
    k = np.arange(n + 1)
    group = np.clip(np.searchsorted(starts, k, side="right") - 1, 0, starts.size - 1)
    start, end = starts[group], ends[group]
    fraction = (k - start) / (end - start)
    result = cumulative[start] + fraction * (cumulative[end] - cumulative[start])
    return np.asarray(result, dtype=np.float64)


def roc_auc(churned: FloatArray, probability: FloatArray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    positives = churned.sum()
    negatives = churned.size - positives
    if positives == 0 or negatives == 0:
        return math.nan
    order = np.argsort(probability, kind="stable")
    sorted_scores = probability[order]
    ranks = np.empty(churned.size, dtype=np.float64)
    # average ranks for ties
    new_group = np.concatenate([[True], sorted_scores[1:] != sorted_scores[:-1]])
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], churned.size)
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    rank_sum = float(ranks[churned == 1].sum())
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def pr_auc(churned: FloatArray, probability: FloatArray) -> float:
    """Average precision (step-wise area under the precision-recall curve), ties pooled.

    NaN when there is no churner.
    """
    positives = churned.sum()
    if positives == 0:
        return math.nan
    order = np.argsort(-probability, kind="stable")
    sorted_scores = probability[order]
    sorted_labels = churned[order]
    last_of_group = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    true_positives = np.cumsum(sorted_labels)[last_of_group]
    contacted = (np.flatnonzero(last_of_group) + 1).astype(np.float64)
    precision = true_positives / contacted
    recall = true_positives / positives
    recall_steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(recall_steps * precision))


def log_loss(churned: FloatArray, probability: FloatArray) -> float:
    """Mean negative log-likelihood, probabilities clipped to [1e-15, 1 - 1e-15]."""
    p = np.clip(probability, _EPS, 1.0 - _EPS)
    return float(-np.mean(churned * np.log(p) + (1.0 - churned) * np.log1p(-p)))


def brier(churned: FloatArray, probability: FloatArray) -> float:
    """Mean squared difference between probability and outcome."""
    return float(np.mean((probability - churned) ** 2))


def calibration_bins(
    churned: FloatArray, probability: FloatArray, bins: int = ECE_BINS
) -> list[tuple[float, float, int]]:
    """Equal-frequency bins by probability: (mean probability, churn rate, rows) each.

    Rows with the same probability always share a bin (a bin boundary inside a run of ties
    moves to its end), so the result does not depend on the order of the rows.
    """
    order = np.argsort(probability, kind="stable")
    ordered = probability[order]
    n = ordered.size
    result: list[tuple[float, float, int]] = []
    parts = min(bins, max(n, 1))
    start = 0
    for k in range(1, parts + 1):
        end = (n * k) // parts
        if end < n:
            # Keep a run of equal probabilities together: end after its last row.
            end = int(np.searchsorted(ordered, ordered[end - 1], side="right")) if end else 0
        if end > start:
            chunk = order[start:end]
            result.append(
                (float(probability[chunk].mean()), float(churned[chunk].mean()), int(chunk.size))
            )
            start = end
    return result


def expected_calibration_error(
    churned: FloatArray, probability: FloatArray, bins: int = ECE_BINS
) -> float:
    """Row-weighted mean |churn rate - mean probability| over equal-frequency bins."""
    n = churned.size
    return float(
        sum(
            rows / n * abs(rate - mean)
            for mean, rate, rows in calibration_bins(churned, probability, bins)
        )
    )


def profit_curve(
    churned: FloatArray,
    probability: FloatArray,
    value: FloatArray,
    *,
    offer_cost: float,
    success_rate: float,
    horizon_months: float,
) -> FloatArray:
    """Expected profit of contacting the top k customers, for k = 0..n (see module doc)."""
    kept_value = expected_top_k(probability, churned * value)
    k = np.arange(churned.size + 1, dtype=np.float64)
    return np.asarray(success_rate * horizon_months * kept_value - offer_cost * k, dtype=np.float64)


def evaluate(
    y: npt.ArrayLike,
    p: npt.ArrayLike,
    *,
    value: npt.ArrayLike,
    capacity: int,
    offer_cost: float,
    success_rate: float,
    horizon_months: float,
    rank_score: npt.ArrayLike | None = None,
) -> dict[str, float]:
    """Metrics of one scorer: labels ``y`` (0/1), probabilities ``p``, monthly ``value``.

    ``rank_score`` (any finite numbers, higher is riskier) is the order the scorer
    ranks customers by, when it is not ``p`` itself: the ranking metrics
    (:data:`RANKING_METRICS`) then use it, and the probability metrics
    (:data:`PROBABILITY_METRICS`) use ``p``. Ties in either are handled as below.

    Keys: ``n_rows``, ``n_churned``, ``base_rate``, ``mean_probability``, ``roc_auc``,
    ``pr_auc`` (average precision), ``log_loss``, ``brier``, ``ece`` (10
    equal-frequency bins), ``top_decile_lift`` (churn rate in the top ceil(n/10)
    over the base rate), ``capacity`` (k = min(capacity, n)),
    ``precision_at_capacity``, ``recall_at_capacity``,
    ``expected_profit_at_capacity``, ``best_k`` and ``expected_profit_at_best_k``
    (the k in 0..n with the highest profit; the smallest such k on ties).
    Undefined values (AUC with one class, lift without churners) are NaN.
    """
    churned = _array(y, "labels")
    probability = _array(p, "probabilities")
    values = _array(value, "values")
    n = churned.size
    if probability.size != n or values.size != n:
        raise EvaluationError(
            f"{n} labels, {probability.size} probabilities and {values.size} values: "
            "they must describe the same rows"
        )
    if not np.all((churned == 0.0) | (churned == 1.0)):
        raise EvaluationError("labels must be 0 or 1")
    if not np.all(np.isfinite(probability)) or np.any((probability < 0) | (probability > 1)):
        bad = int(np.count_nonzero(~((probability >= 0) & (probability <= 1))))
        raise EvaluationError(f"{bad} of {n} probabilities are not in [0, 1]")
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise EvaluationError(f"{bad} of {n} customer values are not finite")
    if capacity < 0:
        raise EvaluationError(f"capacity must not be negative, got {capacity}")
    ranking = probability
    if rank_score is not None:
        ranking = _array(rank_score, "ranking scores")
        if ranking.size != n:
            raise EvaluationError(
                f"{n} labels and {ranking.size} ranking scores: they must describe the same rows"
            )
        if not np.all(np.isfinite(ranking)):
            bad = int(np.count_nonzero(~np.isfinite(ranking)))
            raise EvaluationError(f"{bad} of {n} ranking scores are not finite")
    nan = math.nan
    positives = float(churned.sum())
    base_rate = positives / n if n else nan
    k = min(int(capacity), n)
    captured = expected_top_k(ranking, churned)
    decile = math.ceil(n / 10)
    top_decile_rate = captured[decile] / decile if decile else nan
    profits = profit_curve(
        churned,
        ranking,
        values,
        offer_cost=offer_cost,
        success_rate=success_rate,
        horizon_months=horizon_months,
    )
    best_k = int(np.argmax(profits))
    return {
        "n_rows": float(n),
        "n_churned": positives,
        "base_rate": base_rate,
        "mean_probability": float(probability.mean()) if n else nan,
        "roc_auc": roc_auc(churned, ranking),
        "pr_auc": pr_auc(churned, ranking),
        "log_loss": log_loss(churned, probability) if n else nan,
        "brier": brier(churned, probability) if n else nan,
        "ece": expected_calibration_error(churned, probability) if n else nan,
        "top_decile_lift": float(top_decile_rate / base_rate) if n and positives else nan,
        "capacity": float(k),
        "precision_at_capacity": float(captured[k] / k) if k else nan,
        "recall_at_capacity": float(captured[k] / positives) if positives else nan,
        "expected_profit_at_capacity": float(profits[k]),
        "best_k": float(best_k),
        "expected_profit_at_best_k": float(profits[best_k]),
    }


def _json_safe(metrics: Mapping[str, float]) -> dict[str, float | None]:
    return {key: (None if math.isnan(v) else v) for key, v in metrics.items()}


def _from_json(metrics: Mapping[str, float | None]) -> dict[str, float]:
    return {key: (math.nan if v is None else float(v)) for key, v in metrics.items()}


Table = dict[str, dict[str, float]]


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics of several scorers on the same holdout rows.

    ``overall`` maps scorer -> metrics; ``by_date`` and ``by_segment`` map a
    snapshot date (ISO) or segment -> scorer -> metrics. ``notes`` describe the data;
    ``warnings`` are reasons to distrust a comparison (for example a champion that was
    trained on dates inside this holdout) and are shown first in every report.
    """

    overall: Table
    by_date: dict[str, Table]
    by_segment: dict[str, Table]
    holdout_dates: list[date]
    capacity_per_snapshot: int
    offer_cost: float
    success_rate: float
    horizon_months: float
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def scorers(self) -> list[str]:
        """Names of the evaluated scorers."""
        return list(self.overall)

    def metrics(self, scorer: str) -> dict[str, float]:
        """Overall metrics of one scorer; ``KeyError`` names the scorers available."""
        try:
            return self.overall[scorer]
        except KeyError:
            raise KeyError(
                f"no scorer {scorer!r} in this evaluation; have {self.scorers}"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN becomes null), as stored in the model registry."""

        def table(t: Table) -> dict[str, dict[str, float | None]]:
            return {scorer: _json_safe(m) for scorer, m in t.items()}

        return {
            "overall": table(self.overall),
            "by_date": {key: table(t) for key, t in self.by_date.items()},
            "by_segment": {key: table(t) for key, t in self.by_segment.items()},
            "holdout_dates": [d.isoformat() for d in self.holdout_dates],
            "capacity_per_snapshot": self.capacity_per_snapshot,
            "offer_cost": self.offer_cost,
            "success_rate": self.success_rate,
            "horizon_months": self.horizon_months,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """Inverse of :meth:`to_dict`."""

        def table(t: Mapping[str, Mapping[str, float | None]]) -> Table:
            return {scorer: _from_json(m) for scorer, m in t.items()}

        return cls(
            overall=table(data["overall"]),
            by_date={key: table(t) for key, t in data["by_date"].items()},
            by_segment={key: table(t) for key, t in data["by_segment"].items()},
            holdout_dates=[date.fromisoformat(d) for d in data["holdout_dates"]],
            capacity_per_snapshot=int(data["capacity_per_snapshot"]),
            offer_cost=float(data["offer_cost"]),
            success_rate=float(data["success_rate"]),
            horizon_months=float(data["horizon_months"]),
            notes=list(data.get("notes", [])),
            warnings=list(data.get("warnings", [])),
        )


def compare(
    holdout: pl.DataFrame,
    scores: Mapping[str, npt.ArrayLike],
    *,
    capacity: int,
    offer_cost: float,
    success_rate: float,
    horizon_months: float,
    label_column: str = "churned",
    value_column: str = "customer_value",
    segment_column: str = "segment",
    date_column: str = "snapshot_date",
    rank_scores: Mapping[str, npt.ArrayLike] | None = None,
) -> EvaluationReport:
    """Evaluate every scorer on the same holdout rows: overall, per date and per segment.

    ``rank_scores`` gives, for scorers that rank by something other than their
    probabilities (the rule baseline), the score the ranking metrics use (see
    :func:`evaluate`).

    ``capacity`` is the list capacity of one snapshot (one day's list). Overall,
    the holdout's snapshots are pooled and ranked together with
    ``k = capacity * number of snapshot dates``; per date ``k = capacity``; per
    segment ``k`` is the pooled k scaled by the segment's share of rows (at least 1).
    A null customer value counts as 0 and a null segment as ``(missing)``; both
    are counted in ``notes``.
    """
    for column in (label_column, value_column, date_column):
        if column not in holdout.columns:
            raise EvaluationError(
                f"holdout frame has no column {column!r} ({holdout.height} rows); "
                f"columns: {holdout.columns}"
            )
    if holdout.height == 0:
        raise EvaluationError("holdout frame has no rows")
    if not scores:
        raise EvaluationError("no scores to evaluate")
    null_labels = holdout.get_column(label_column).null_count()
    if null_labels:
        raise EvaluationError(
            f"holdout column {label_column!r} has {null_labels} null labels "
            f"of {holdout.height} rows"
        )
    arrays: dict[str, FloatArray] = {}
    for scorer, values in scores.items():
        array = _array(values, scorer)
        if array.size != holdout.height:
            raise EvaluationError(
                f"scorer {scorer!r} has {array.size} scores for {holdout.height} holdout rows"
            )
        arrays[scorer] = array
    rankings: dict[str, FloatArray] = {}
    for scorer, values in (rank_scores or {}).items():
        if scorer not in arrays:
            raise EvaluationError(
                f"ranking scores for {scorer!r}, which has no probabilities; have {list(arrays)}"
            )
        array = _array(values, scorer)
        if array.size != holdout.height:
            raise EvaluationError(
                f"scorer {scorer!r} has {array.size} ranking scores for {holdout.height} "
                "holdout rows"
            )
        rankings[scorer] = array
    notes: list[str] = []
    churned = holdout.get_column(label_column).cast(pl.Float64).to_numpy()
    value_series = holdout.get_column(value_column).cast(pl.Float64)
    missing_values = value_series.null_count()
    if missing_values:
        notes.append(
            f"{missing_values} of {holdout.height} rows have no {value_column}; counted as 0"
        )
    value = value_series.fill_null(0.0).to_numpy()
    dates = holdout.get_column(date_column).to_numpy()
    holdout_dates = sorted(holdout.get_column(date_column).unique().to_list())
    pooled_capacity = capacity * len(holdout_dates)
    common = {
        "offer_cost": offer_cost,
        "success_rate": success_rate,
        "horizon_months": horizon_months,
    }

    def table(mask: npt.NDArray[np.bool_] | None, k: int) -> Table:
        result: Table = {}
        for scorer, p in arrays.items():
            ranking = rankings.get(scorer)
            if mask is None:
                result[scorer] = evaluate(
                    churned, p, value=value, capacity=k, rank_score=ranking, **common
                )
            else:
                result[scorer] = evaluate(
                    churned[mask],
                    p[mask],
                    value=value[mask],
                    capacity=k,
                    rank_score=None if ranking is None else ranking[mask],
                    **common,
                )
        return result

    overall = table(None, pooled_capacity)
    by_date: dict[str, Table] = {}
    for day in holdout_dates:
        mask = dates == np.datetime64(day)
        by_date[day.isoformat()] = table(mask, capacity)
    by_segment: dict[str, Table] = {}
    if segment_column in holdout.columns:
        segment_series = holdout.get_column(segment_column).cast(pl.String)
        missing_segments = segment_series.null_count()
        if missing_segments:
            notes.append(
                f"{missing_segments} of {holdout.height} rows have no {segment_column}; "
                f"reported as {MISSING_SEGMENT}"
            )
        segments = segment_series.fill_null(MISSING_SEGMENT).to_numpy()
        for segment in sorted(set(segments.tolist())):
            mask = segments == segment
            share = int(mask.sum()) / holdout.height
            k = max(1, round(pooled_capacity * share)) if pooled_capacity else 0
            by_segment[str(segment)] = table(mask, k)
    else:
        notes.append(f"no {segment_column!r} column: no per-segment metrics")
    return EvaluationReport(
        overall=overall,
        by_date=by_date,
        by_segment=by_segment,
        holdout_dates=holdout_dates,
        capacity_per_snapshot=capacity,
        offer_cost=offer_cost,
        success_rate=success_rate,
        horizon_months=horizon_months,
        notes=notes,
    )


def training_overlap(
    train_dates: Sequence[date], horizon_days: int, holdout_dates: Sequence[date]
) -> list[date]:
    """The training snapshot dates whose labels were observed on or after the holdout began.

    A snapshot d's label is observed over ``[d, d + horizon_days]``; when that ends after the
    first holdout date, a model trained on d has learnt from outcomes inside the holdout
    period (or later), and its metrics on that holdout are optimistic.
    """
    if not holdout_dates:
        return []
    first = min(holdout_dates)
    horizon = timedelta(days=horizon_days)
    return sorted(d for d in train_dates if d + horizon > first)


@dataclass(frozen=True)
class HoldoutEvaluation:
    """A candidate's evaluation with the rows and scores it was computed from."""

    report: EvaluationReport
    holdout: pl.DataFrame
    scores: dict[str, FloatArray]
    """Probabilities per scorer."""
    rank_scores: dict[str, FloatArray] = field(default_factory=dict)
    """Per scorer that ranks by something other than its probabilities, that ranking score."""

    def ranking(self, scorer: str) -> FloatArray:
        """The scores ``scorer`` ranks customers by (its probabilities unless it has its own)."""
        return self.rank_scores.get(scorer, self.scores[scorer])


def evaluate_candidate(
    frame: pl.DataFrame,
    model: TrainedModel,
    *,
    champion: TrainedModel | None,
    capacity: int,
    offer_cost: float,
    success_rate: float,
    horizon_months: float,
    scorers: Sequence[str] = (MODEL, MODEL_UNCALIBRATED, CHAMPION, RULE_BASELINE),
) -> HoldoutEvaluation:
    """Score the model's holdout with the model, the champion and the rule baseline.

    The rule baseline ranks by its raw rule score (ranking metrics) and gives
    probabilities (log loss, Brier, ECE) from an isotonic map fitted on the
    model's training dates only. The champion scores the same rows with its own
    feature list (columns it does not use are ignored; a feature it needs but the
    frame lacks raises :class:`models.encoding.FeatureMismatchError`).
    """
    from models.baseline import RuleBaseline
    from models.train import holdout_rows, training_rows

    holdout = holdout_rows(frame, model)
    scores: dict[str, FloatArray] = {}
    rank_scores: dict[str, FloatArray] = {}
    notes: list[str] = []
    if MODEL in scorers:
        scores[MODEL] = model.predict_proba(holdout)
    if MODEL_UNCALIBRATED in scorers:
        scores[MODEL_UNCALIBRATED] = model.predict_raw(holdout)
    if CHAMPION in scorers and champion is not None:
        scores[CHAMPION] = champion.predict_proba(holdout)
    if RULE_BASELINE in scorers:
        baseline = RuleBaseline.fit(training_rows(frame, model))
        rank_scores[RULE_BASELINE] = baseline.score(holdout)
        scores[RULE_BASELINE] = baseline.predict_proba(holdout)
        notes.append(
            f"{RULE_BASELINE}: ranking metrics (ROC AUC, PR AUC, lift, precision and recall at "
            "capacity, profit) use the raw rule score "
            f"({np.unique(rank_scores[RULE_BASELINE]).size:,} distinct values on the holdout); "
            "log loss, Brier and ECE use its isotonic probabilities fitted on the training "
            f"dates ({np.unique(scores[RULE_BASELINE]).size:,} distinct values)"
        )
    report = compare(
        holdout,
        scores,
        capacity=capacity,
        offer_cost=offer_cost,
        success_rate=success_rate,
        horizon_months=horizon_months,
        rank_scores=rank_scores,
    )
    report = replace(report, notes=[*report.notes, *notes])
    return HoldoutEvaluation(report=report, holdout=holdout, scores=scores, rank_scores=rank_scores)
