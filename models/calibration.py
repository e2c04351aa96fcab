"""Probability calibration fitted on rows the booster never trained on, stored as JSON.

Two methods:

* ``isotonic``: pool-adjacent-violators on the raw scores gives a non-decreasing
  step function; it is stored as knots (the lowest and highest raw score of each
  block with the block's churn rate) and applied by linear interpolation between
  knots, constant beyond the ends.
* ``platt``: a logistic regression on the log-odds of the raw probability,
  ``p = 1 / (1 + exp(-(a * logit(raw) + b)))``, fitted with Platt's smoothed
  targets. Two parameters, so it suits small calibration slices, and it is
  strictly increasing, so it keeps the booster's ranking exactly. The default.

Isotonic outputs are clipped to ``[0.5 / (n + 1), 1 - 0.5 / (n + 1)]`` for ``n``
calibration rows: a slice of ``n`` rows cannot support a probability closer to 0
or 1 than that, and an exact 0 or 1 would make the log loss infinite. Its flat
steps tie customers the booster had ranked apart, which costs ranking quality
on small slices; prefer it only with many calibration rows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
CalibrationMethod = Literal["isotonic", "platt"]
CALIBRATION_METHODS: tuple[CalibrationMethod, ...] = ("isotonic", "platt")
_FORMAT = 1
_LOGIT_CLIP = 1e-12


class CalibrationError(ValueError):
    """A calibrator could not be fitted or read back."""


def _as_float(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise CalibrationError(f"{name}: {bad} of {array.size} values are not finite")
    return array


def _logit(p: FloatArray) -> FloatArray:
    clipped = np.clip(p, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(clipped) - np.log1p(-clipped)


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def pool_adjacent_violators(
    x: FloatArray, y: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Isotonic (non-decreasing) least-squares fit of ``y`` on ``x``.

    Returns one entry per block: lowest ``x``, highest ``x``, fitted value, row count.
    Rows with equal ``x`` always share a block.
    """
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    distinct, start = np.unique(xs, return_index=True)
    counts = np.diff(np.append(start, xs.size)).astype(np.float64)
    sums = np.add.reduceat(ys, start) if xs.size else np.zeros(0)
    # Stack of blocks: [x_low, x_high, sum, count]
    lows: list[float] = []
    highs: list[float] = []
    block_sums: list[float] = []
    block_counts: list[float] = []
    for value, total, count in zip(distinct.tolist(), sums.tolist(), counts.tolist(), strict=True):
        lows.append(value)
        highs.append(value)
        block_sums.append(total)
        block_counts.append(count)
        while (
            len(block_sums) > 1
            and block_sums[-2] / block_counts[-2] >= block_sums[-1] / block_counts[-1]
        ):
            total_last, count_last, high_last = block_sums.pop(), block_counts.pop(), highs.pop()
            lows.pop()
            block_sums[-1] += total_last
            block_counts[-1] += count_last
            highs[-1] = high_last
    means = np.asarray(block_sums, dtype=np.float64) / np.asarray(block_counts, dtype=np.float64)
    return (
        np.asarray(lows, dtype=np.float64),
        np.asarray(highs, dtype=np.float64),
        means,
        np.asarray(block_counts, dtype=np.float64),
    )


def _fit_platt(raw: FloatArray, y: FloatArray) -> tuple[float, float]:
    """Platt scaling on logit(raw) by Newton's method with step halving."""
    z = _logit(raw)
    positives = float(y.sum())
    negatives = float(y.size - positives)
    target = np.where(y > 0.5, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))

    def loss(a: float, b: float) -> float:
        s = a * z + b
        # log(1 + exp(s)) - t * s, computed stably
        return float(np.sum(np.logaddexp(0.0, s) - target * s))

    a, b = 1.0, 0.0
    current = loss(a, b)
    for _ in range(100):
        p = _sigmoid(a * z + b)
        w = p * (1.0 - p)
        grad_a = float(np.sum((p - target) * z))
        grad_b = float(np.sum(p - target))
        h_aa = float(np.sum(w * z * z)) + 1e-12
        h_ab = float(np.sum(w * z))
        h_bb = float(np.sum(w)) + 1e-12
        det = h_aa * h_bb - h_ab * h_ab
        if det <= 0:
            break
        step_a = (h_bb * grad_a - h_ab * grad_b) / det
        step_b = (h_aa * grad_b - h_ab * grad_a) / det
        scale = 1.0
        while scale > 1e-10:
            candidate = loss(a - scale * step_a, b - scale * step_b)
            if candidate <= current:
                break
            scale /= 2.0
        else:
            break
        a, b = a - scale * step_a, b - scale * step_b
        improvement = current - candidate
        current = candidate
        converged = abs(step_a * scale) < 1e-10 and abs(step_b * scale) < 1e-10
        if converged or improvement < 1e-12:
            break
    return a, b


class Calibrator:
    """Maps raw scores to calibrated churn probabilities; JSON in, JSON out, no pickle."""

    def __init__(
        self,
        method: CalibrationMethod,
        *,
        n_rows: int,
        n_positive: int,
        knots_x: list[float] | None = None,
        knots_y: list[float] | None = None,
        slope: float | None = None,
        intercept: float | None = None,
    ) -> None:
        if method not in CALIBRATION_METHODS:
            raise CalibrationError(f"unknown calibration method {method!r}")
        if n_rows < 1:
            raise CalibrationError("a calibrator needs at least one row")
        self.method: CalibrationMethod = method
        self.n_rows = int(n_rows)
        self.n_positive = int(n_positive)
        self.knots_x = [float(v) for v in knots_x or []]
        self.knots_y = [float(v) for v in knots_y or []]
        self.slope = slope
        self.intercept = intercept
        if method == "isotonic":
            if not self.knots_x or len(self.knots_x) != len(self.knots_y):
                raise CalibrationError("isotonic calibrator needs matching, non-empty knots")
            xs = np.asarray(self.knots_x)
            ys = np.asarray(self.knots_y)
            if np.any(np.diff(xs) < 0) or np.any(np.diff(ys) < 0):
                raise CalibrationError("isotonic calibrator knots must be non-decreasing")
            if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
                raise CalibrationError("isotonic calibrator knots must be finite")
        elif slope is None or intercept is None or not (math.isfinite(slope + intercept)):
            raise CalibrationError("platt calibrator needs a finite slope and intercept")

    @property
    def bounds(self) -> tuple[float, float]:
        """The lowest and highest probability the isotonic map gives."""
        floor = 0.5 / (self.n_rows + 1)
        return floor, 1.0 - floor

    @classmethod
    def fit(
        cls, raw: npt.ArrayLike, churned: npt.ArrayLike, method: CalibrationMethod = "isotonic"
    ) -> Calibrator:
        """Fit on raw scores and realised labels (0/1) of rows the scorer did not train on."""
        x = _as_float(raw, "raw scores")
        y = _as_float(churned, "labels")
        if x.size != y.size:
            raise CalibrationError(f"{x.size} raw scores but {y.size} labels")
        if x.size == 0:
            raise CalibrationError("no rows to fit the calibrator on")
        if not np.all((y == 0.0) | (y == 1.0)):
            raise CalibrationError("labels must be 0 or 1")
        positives = int(y.sum())
        if method == "isotonic":
            lows, highs, means, _ = pool_adjacent_violators(x, y)
            knots_x: list[float] = []
            knots_y: list[float] = []
            for low, high, mean in zip(lows.tolist(), highs.tolist(), means.tolist(), strict=True):
                knots_x.append(low)
                knots_y.append(mean)
                if high > low:
                    knots_x.append(high)
                    knots_y.append(mean)
            return cls(
                "isotonic",
                n_rows=x.size,
                n_positive=positives,
                knots_x=knots_x,
                knots_y=knots_y,
            )
        if method == "platt":
            if np.any((x < 0.0) | (x > 1.0)):
                raise CalibrationError("platt calibration takes raw probabilities in [0, 1]")
            slope, intercept = _fit_platt(x, y)
            return cls(
                "platt", n_rows=x.size, n_positive=positives, slope=slope, intercept=intercept
            )
        raise CalibrationError(f"unknown calibration method {method!r}")

    def apply(self, raw: npt.ArrayLike) -> FloatArray:
        """Calibrated probabilities for raw scores (NaN in, NaN out)."""
        x = np.asarray(raw, dtype=np.float64).reshape(-1)
        if self.method == "isotonic":
            out = np.interp(x, np.asarray(self.knots_x), np.asarray(self.knots_y))
            low, high = self.bounds
            return np.asarray(np.clip(out, low, high), dtype=np.float64)
        if self.slope is None or self.intercept is None:
            raise CalibrationError("platt calibrator has no slope and intercept")
        out = _sigmoid(self.slope * _logit(x) + self.intercept)
        out[np.isnan(x)] = np.nan
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that :meth:`from_json` restores exactly."""
        data: dict[str, Any] = {
            "format": _FORMAT,
            "method": self.method,
            "n_rows": self.n_rows,
            "n_positive": self.n_positive,
        }
        if self.method == "isotonic":
            data["knots_x"] = list(self.knots_x)
            data["knots_y"] = list(self.knots_y)
        else:
            data["slope"] = self.slope
            data["intercept"] = self.intercept
        return data

    def to_json(self) -> str:
        """The calibrator as a JSON document (floats round-trip exactly)."""
        return json.dumps(self.to_dict(), allow_nan=False, sort_keys=True)

    @classmethod
    def from_json(cls, document: str | Mapping[str, Any]) -> Calibrator:
        """Restore a calibrator from :meth:`to_json` text or :meth:`to_dict` data."""
        try:
            data = json.loads(document) if isinstance(document, str) else dict(document)
            if data.get("format") != _FORMAT:
                raise CalibrationError(f"unsupported calibrator format {data.get('format')!r}")
            method = cast(CalibrationMethod, data["method"])
            return cls(
                method,
                n_rows=int(data["n_rows"]),
                n_positive=int(data["n_positive"]),
                knots_x=data.get("knots_x"),
                knots_y=data.get("knots_y"),
                slope=None if data.get("slope") is None else float(data["slope"]),
                intercept=None if data.get("intercept") is None else float(data["intercept"]),
            )
        except CalibrationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"calibrator JSON is not readable: {exc}") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Calibrator) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        if self.method == "isotonic":
            return f"Calibrator(isotonic, {len(self.knots_x)} knots, {self.n_rows} rows)"
        return f"Calibrator(platt, a={self.slope:.4g}, b={self.intercept:.4g}, {self.n_rows} rows)"
