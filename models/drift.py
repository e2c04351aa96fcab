"""Drift guard: population stability index (PSI) of tonight's rows against the training data.

At training time :func:`reference_profile` summarises each model feature (and the score) as a
histogram: the share of training rows per bin. At scoring time :func:`population_stability`
puts tonight's rows into the same bins and compares the two histograms::

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

where *expected* is the training share and *actual* tonight's share of a bin. Every term is
at least 0, so the PSI is at least 0, and it is 0 when the histograms agree. Rules of thumb:
below 0.1 the population is stable, 0.1 to 0.25 it moved, above 0.25 it moved a lot.

Bins:

* numeric feature: quantile bins of the training rows (``bins`` of them, default 10, from
  the finite values; the inverted-CDF quantile, so every edge is an observed value).
  Repeated edges are merged, so a feature with few distinct values gets fewer bins and a
  constant feature two (up to the constant, above it). Bins are closed on the right,
  ``(edge[i-1], edge[i]]``, and the outer edges are minus and plus infinity, so every value
  tonight lands in a bin; the profile stores only the finite inner edges, which keeps it
  strict JSON. Missing values (null or NaN) form one more bin of their own.
* categorical feature: the ``max_categories`` most frequent training categories (ties by
  name), one bin for every other value (including categories first seen tonight) and one
  bin for null. Categories longer than :data:`MAX_CATEGORY_CHARS` characters count as
  *other*, which keeps the profile a few KB per feature.
* the score: like a numeric feature, reported under the name :data:`SCORE_KEY`.

Empty bins are smoothed: a share below :data:`EPSILON` (1e-4) counts as :data:`EPSILON` on
both sides before the formula is applied, so a bin that is empty in training and filled
tonight gives a large but finite term, and bins holding well under 0.01% of rows on both
sides add (almost) nothing. With this floor the PSI of one feature is at most about 18.

:func:`judge_drift` turns PSI values into a verdict (ok, warn, stop) against the
configured thresholds; the caller raises :class:`DriftStop` on a stop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl

FloatArray = npt.NDArray[np.float64]
DriftStatus = Literal["ok", "warn", "stop"]
BinPlan = tuple[Literal["numeric"], FloatArray] | tuple[Literal["categorical"], list[str]]
"""How to bin one column: numeric edges, or categorical names."""

PROFILE_FORMAT = 1
"""Version of the profile layout written by :func:`reference_profile`."""
SCORE_KEY = "__score__"
"""Name under which the score's PSI is reported, next to the feature names."""
EPSILON = 1e-4
"""Floor applied to every bin share before computing the PSI."""
MAX_CATEGORY_CHARS = 100
"""Categories longer than this are not kept by name in a profile; they count as *other*."""
DEFAULT_STOP_COUNT = 3
"""Features at the stop level that stop the run even when none of them is watched."""
MAX_BINS = 100
MAX_CATEGORIES = 200
_SHARE_TOLERANCE = 1e-6


class DriftProfileError(ValueError):
    """A reference profile is malformed or was written in an unknown format."""


# -- reference profile (training time) ------------------------------------------------------


def reference_profile(
    features: pl.DataFrame,
    columns: Sequence[str],
    categorical: Sequence[str],
    scores: npt.ArrayLike | None,
    *,
    bins: int = 10,
    max_categories: int = 20,
) -> dict[str, Any]:
    """Summarise the training rows as per-feature histograms to compare later nights against.

    ``columns`` are the features to profile; those also named in ``categorical`` get
    category bins, the others quantile bins (see the module docstring). ``scores`` are the
    model's calibrated probabilities on rows it did not train on (a holdout or calibration
    slice), or None to profile the features only. Returns a JSON-able dict (strict JSON: no
    NaN or infinity) for the registry's ``training_reference`` column; it is read back by
    :func:`population_stability`. Raises ``ValueError`` on an empty frame, a missing column,
    a numeric feature stored as text or a column named :data:`SCORE_KEY`.
    """
    if not 2 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be between 2 and {MAX_BINS}, got {bins}")
    if not 1 <= max_categories <= MAX_CATEGORIES:
        raise ValueError(f"max_categories must be between 1 and {MAX_CATEGORIES}")
    if features.height == 0:
        raise ValueError("training features: 0 rows, cannot build a drift reference")
    names = list(dict.fromkeys(columns))
    if SCORE_KEY in names:
        raise ValueError(f"training features: column name {SCORE_KEY!r} is reserved for the score")
    absent = [name for name in names if name not in features.columns]
    if absent:
        raise ValueError(
            f"training features ({features.height} rows): columns {absent} are missing; "
            f"present: {features.columns}"
        )
    categorical_names = set(categorical)
    numeric_edges: dict[str, FloatArray] = {}
    for name in names:
        if name not in categorical_names:
            column = features.get_column(name)
            _check_numeric(column, "training")
            numeric_edges[name] = _quantile_edges(column, bins)
    numeric_shares = _bin_shares(
        features, {name: ("numeric", edges) for name, edges in numeric_edges.items()}
    )
    profiled: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in categorical_names:
            column = features.get_column(name)
            _check_text(column, "training")
            profiled[name] = _categorical_reference(column, max_categories)
        else:
            profiled[name] = _numeric_entry(numeric_edges[name], numeric_shares[name])
    score: dict[str, Any] | None = None
    if scores is not None:
        score_frame = _score_frame(scores, "training")
        edges = _quantile_edges(score_frame.get_column(SCORE_KEY), bins)
        shares = _bin_shares(score_frame, {SCORE_KEY: ("numeric", edges)})[SCORE_KEY]
        score = {**_numeric_entry(edges, shares), "rows": score_frame.height}
    return {
        "format": PROFILE_FORMAT,
        "bins": bins,
        "max_categories": max_categories,
        "rows": features.height,
        "features": profiled,
        "score": score,
    }


def _quantile_edges(column: pl.Series, bins: int) -> FloatArray:
    """Distinct inverted-CDF quantiles ``k / bins`` (``k = 1 .. bins - 1``) of the finite values."""
    values = column.cast(pl.Float64).to_numpy()
    finite = np.sort(values[np.isfinite(values)])
    if finite.size == 0:
        return np.empty(0, dtype=np.float64)
    positions = [(k * finite.size + bins - 1) // bins - 1 for k in range(1, bins)]
    edges: FloatArray = np.unique(finite[positions])
    return edges


def _numeric_entry(edges: FloatArray, shares: FloatArray) -> dict[str, Any]:
    return {
        "kind": "numeric",
        "edges": [float(edge) for edge in edges],
        "shares": [float(share) for share in shares[:-1]],
        "null_share": float(shares[-1]),
    }


def _categorical_reference(column: pl.Series, max_categories: int) -> dict[str, Any]:
    rows = column.len()
    counts = (
        column.cast(pl.String)
        .rename("value")
        .drop_nulls()
        .value_counts(name="rows")
        .filter(pl.col("value").str.len_chars() <= MAX_CATEGORY_CHARS)
        .sort(["rows", "value"], descending=[True, False])
        .head(max_categories)
    )
    categories: list[str] = counts.get_column("value").to_list()
    kept: list[int] = counts.get_column("rows").to_list()
    nulls = column.null_count()
    return {
        "kind": "categorical",
        "categories": categories,
        "shares": [count / rows for count in kept],
        "other_share": (rows - nulls - sum(kept)) / rows,
        "null_share": nulls / rows,
    }


# -- tonight's population (scoring time) ----------------------------------------------------


def population_stability(
    profile: Mapping[str, Any],
    features: pl.DataFrame,
    scores: npt.ArrayLike | None,
) -> dict[str, float]:
    """PSI of each profiled feature (and of the score, as :data:`SCORE_KEY`) for tonight's rows.

    ``profile`` is what :func:`reference_profile` returned (also after a JSON round trip).
    Tonight's values go into the reference bins; shares are smoothed with :data:`EPSILON`.
    A profiled feature missing from ``features`` gets ``nan`` (the verdict lists it as
    missing and treats it as drifted beyond the stop level); columns the profile does not
    know are ignored. The score is compared when both the profile has a score reference and
    ``scores`` is given. All bins of all features are counted in one parallel Polars pass.
    Raises :class:`DriftProfileError` on a malformed profile and ``ValueError`` on an empty
    frame or a column whose type contradicts its reference.
    """
    reference = _read_profile(profile)
    if features.height == 0:
        raise ValueError("tonight's features: 0 rows, nothing to compare with the reference")
    plans: dict[str, BinPlan] = {}
    for name, entry in reference["features"].items():
        if name not in features.columns:
            continue
        column = features.get_column(name)
        if entry["kind"] == "numeric":
            _check_numeric(column, "tonight's")
            plans[name] = ("numeric", np.asarray(entry["edges"], dtype=np.float64))
        else:
            _check_text(column, "tonight's")
            plans[name] = ("categorical", entry["categories"])
    actual = _bin_shares(features, plans)
    psi: dict[str, float] = {}
    score = reference["score"]
    if score is not None and scores is not None:
        score_frame = _score_frame(scores, "tonight's")
        edges = np.asarray(score["edges"], dtype=np.float64)
        score_shares = _bin_shares(score_frame, {SCORE_KEY: ("numeric", edges)})[SCORE_KEY]
        psi[SCORE_KEY] = _psi(_expected_shares(score), score_shares)
    for name, entry in reference["features"].items():
        psi[name] = _psi(_expected_shares(entry), actual[name]) if name in actual else math.nan
    return psi


def _bin_shares(frame: pl.DataFrame, plans: Mapping[str, BinPlan]) -> dict[str, FloatArray]:
    """Share of ``frame``'s rows in each bin, per column, in profile order.

    Numeric: the right-closed bins between the edges, then missing (null or NaN).
    Categorical: each category, then *other*, then null. One ``select`` counts everything.
    """
    expressions: list[pl.Expr] = []
    for j, (name, (kind, cuts)) in enumerate(plans.items()):
        if kind == "numeric":
            value = pl.col(name).cast(pl.Float64).fill_nan(None)
            expressions.append(value.null_count().alias(f"{j}:missing"))
            expressions.extend(
                (value <= float(cut)).sum().alias(f"{j}:{i}") for i, cut in enumerate(cuts)
            )
        else:
            text = pl.col(name).cast(pl.String)
            expressions.append(text.null_count().alias(f"{j}:missing"))
            expressions.extend(
                (text == category).sum().alias(f"{j}:{i}") for i, category in enumerate(cuts)
            )
    if not expressions:
        return {}
    counts = frame.lazy().select(expressions).collect().row(0)
    rows = frame.height
    shares: dict[str, FloatArray] = {}
    position = 0
    for name, (kind, cuts) in plans.items():
        missing = float(counts[position])
        tallies = np.asarray(counts[position + 1 : position + 1 + len(cuts)], dtype=np.float64)
        position += 1 + len(cuts)
        present = rows - missing
        if kind == "numeric":
            in_bins = np.diff(tallies, prepend=0.0, append=present)
        else:
            in_bins = np.append(tallies, present - tallies.sum())
        shares[name] = np.append(in_bins, missing) / rows
    return shares


def _expected_shares(entry: Mapping[str, Any]) -> FloatArray:
    tail = [entry["null_share"]]
    if entry["kind"] == "categorical":
        tail.insert(0, entry["other_share"])
    return np.asarray([*entry["shares"], *tail], dtype=np.float64)


def _psi(expected: FloatArray, actual: FloatArray) -> float:
    floored_expected = np.maximum(expected, EPSILON)
    floored_actual = np.maximum(actual, EPSILON)
    terms = (floored_actual - floored_expected) * np.log(floored_actual / floored_expected)
    return float(terms.sum())


# -- inputs ---------------------------------------------------------------------------------


def _check_numeric(column: pl.Series, which: str) -> None:
    dtype = column.dtype
    if not (dtype.is_numeric() or dtype in (pl.Boolean, pl.Null)):
        raise ValueError(
            f"{which} features: column {column.name!r} ({column.len()} rows) is {dtype}, "
            "but its drift reference is numeric"
        )


def _check_text(column: pl.Series, which: str) -> None:
    dtype = column.dtype
    if not (dtype in (pl.String, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum)):
        raise ValueError(
            f"{which} features: column {column.name!r} ({column.len()} rows) is {dtype}, "
            "but its drift reference is categorical"
        )


def _score_frame(scores: npt.ArrayLike, which: str) -> pl.DataFrame:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{which} scores: expected one score per row, got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{which} scores: 0 rows, cannot compare the score distribution")
    return pl.DataFrame({SCORE_KEY: values})


def _read_profile(profile: Mapping[str, Any]) -> dict[str, Any]:
    """Check a profile's layout; returns it with its feature entries validated."""
    if not isinstance(profile, Mapping):
        raise DriftProfileError(f"drift profile must be a mapping, got {type(profile).__name__}")
    if profile.get("format") != PROFILE_FORMAT:
        raise DriftProfileError(
            f"drift profile format {profile.get('format')!r} is not {PROFILE_FORMAT}; "
            "rebuild the reference by retraining"
        )
    features = profile.get("features")
    if not isinstance(features, Mapping):
        raise DriftProfileError("drift profile has no 'features' mapping")
    for name, entry in features.items():
        _check_entry(str(name), entry)
    score = profile.get("score")
    if score is not None:
        _check_entry(SCORE_KEY, score)
        if score.get("kind") != "numeric":
            raise DriftProfileError("drift profile: the score reference must be numeric")
    return {"features": dict(features), "score": score}


def _check_entry(name: str, entry: Any) -> None:
    if not isinstance(entry, Mapping):
        raise DriftProfileError(f"drift profile: entry {name!r} is not a mapping")
    kind = entry.get("kind")
    try:
        shares = [float(share) for share in entry["shares"]]
        tail = [float(entry["null_share"])]
        if kind == "numeric":
            edges = [float(edge) for edge in entry["edges"]]
            if len(shares) != len(edges) + 1:
                raise DriftProfileError(
                    f"drift profile: {name!r} has {len(edges)} edges but {len(shares)} shares"
                )
            if not all(math.isfinite(edge) for edge in edges) or any(
                later <= earlier for earlier, later in pairwise(edges)
            ):
                raise DriftProfileError(
                    f"drift profile: {name!r} edges must be finite and increasing"
                )
        elif kind == "categorical":
            categories = entry["categories"]
            if len(categories) != len(shares) or not all(isinstance(c, str) for c in categories):
                raise DriftProfileError(
                    f"drift profile: {name!r} needs one share per category (text)"
                )
            tail.append(float(entry["other_share"]))
        else:
            raise DriftProfileError(f"drift profile: {name!r} has unknown kind {kind!r}")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DriftProfileError):
            raise
        raise DriftProfileError(f"drift profile: entry {name!r} is malformed ({exc})") from exc
    every = shares + tail
    if any(not 0.0 <= share <= 1.0 for share in every) or abs(sum(every) - 1.0) > _SHARE_TOLERANCE:
        raise DriftProfileError(f"drift profile: {name!r} shares must lie in [0, 1] and sum to 1")


# -- verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftVerdict:
    """What tonight's drift means for the run.

    ``warned``: names with ``warn <= PSI < stop``; ``stopped``: names with ``PSI >= stop``
    or missing tonight; ``missing``: profiled features absent tonight (PSI ``nan``). Each
    list is ordered worst first. ``reason`` says in words why the status is what it is.
    """

    status: DriftStatus
    psi: dict[str, float]
    warned: list[str]
    stopped: list[str]
    missing: list[str] = field(default_factory=list)
    warn_threshold: float | None = None
    stop_threshold: float | None = None
    reason: str = ""

    def worst(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` largest PSI values with their names, missing features first."""
        return [(name, self.psi[name]) for name in _worst_first(self.psi)[:n]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary for ``scoring_runs.drift`` (NaN written as null)."""
        finite = [value for value in self.psi.values() if not math.isnan(value)]
        return {
            "status": self.status,
            "reason": self.reason,
            "warn_threshold": self.warn_threshold,
            "stop_threshold": self.stop_threshold,
            "psi_max": round(max(finite), 6) if finite else None,
            "warned": list(self.warned),
            "stopped": list(self.stopped),
            "missing": list(self.missing),
            "psi": {
                name: None if math.isnan(value) else round(value, 6)
                for name, value in self.psi.items()
            },
        }

    def summary_lines(self, limit: int = 10) -> list[str]:
        """Plain-text lines for logs and the run summary artifact, worst features first."""
        lines = [f"drift {self.status}: {self.reason}" if self.reason else f"drift {self.status}"]
        if SCORE_KEY in self.psi:
            lines.append(f"score PSI {_format_psi(self.psi[SCORE_KEY])}")
        groups = (
            ("at stop level", [n for n in self.stopped if n not in self.missing]),
            ("at warn level", self.warned),
        )
        for label, names in groups:
            features = [name for name in names if name != SCORE_KEY]
            if features:
                lines.append(
                    f"features {label} ({len(features)}): {self._listing(features, limit)}"
                )
        if self.missing:
            shown = ", ".join(self.missing[:limit])
            more = f", ... {len(self.missing) - limit} more" if len(self.missing) > limit else ""
            lines.append(f"features missing tonight ({len(self.missing)}): {shown}{more}")
        return lines

    def _listing(self, names: Sequence[str], limit: int) -> str:
        shown = ", ".join(f"{name} {_format_psi(self.psi[name])}" for name in names[:limit])
        return shown + (f", ... {len(names) - limit} more" if len(names) > limit else "")


class DriftStop(RuntimeError):  # noqa: N818
    """Tonight's population drifted beyond the stop level; no list should be written."""

    def __init__(self, verdict: DriftVerdict) -> None:
        self.verdict = verdict
        super().__init__("\n".join(verdict.summary_lines(limit=5)))

    def __reduce__(self) -> tuple[type[DriftStop], tuple[DriftVerdict]]:
        return (type(self), (self.verdict,))


def judge_drift(
    psi: Mapping[str, float],
    *,
    warn: float,
    stop: float,
    watch: Sequence[str] | None = None,
    stop_count: int = DEFAULT_STOP_COUNT,
) -> DriftVerdict:
    """Decide ok, warn or stop from PSI values (as :func:`population_stability` returns them).

    *stop* when the score's PSI is at least ``stop``, or any feature in ``watch`` (say the
    model's most important features) is, or at least ``stop_count`` features are; a missing
    feature (``nan``) counts as being at the stop level. *warn* when anything else reaches
    ``warn`` (or ``stop``). *ok* otherwise. Names in ``watch`` without a PSI are ignored.
    Raises ``ValueError`` unless ``0 <= warn <= stop``, ``stop_count >= 1`` and every PSI is
    at least 0 or ``nan``.
    """
    if not (math.isfinite(warn) and math.isfinite(stop) and 0 <= warn <= stop):
        raise ValueError(f"drift thresholds need 0 <= warn <= stop, got warn={warn}, stop={stop}")
    if stop_count < 1:
        raise ValueError(f"stop_count must be at least 1, got {stop_count}")
    values = {str(name): float(value) for name, value in psi.items()}
    negative = [name for name, value in values.items() if value < 0]
    if negative:
        raise ValueError(f"PSI cannot be negative: {negative}")
    ordered = _worst_first(values)
    missing = [name for name in ordered if math.isnan(values[name])]
    stopped = [name for name in ordered if math.isnan(values[name]) or values[name] >= stop]
    warned = [name for name in ordered if warn <= values[name] < stop]
    watched = set(watch or ())
    stopped_features = [name for name in stopped if name != SCORE_KEY]
    reasons: list[str] = []
    if SCORE_KEY in stopped:
        reasons.append(f"the score's PSI {_format_psi(values[SCORE_KEY])} is at or above {stop:g}")
    watched_stopped = [name for name in stopped_features if name in watched]
    if watched_stopped:
        reasons.append(f"watched features at or above {stop:g}: {', '.join(watched_stopped)}")
    if len(stopped_features) >= stop_count:
        reasons.append(
            f"{len(stopped_features)} features at or above {stop:g} (stop from {stop_count})"
        )
    status: DriftStatus
    if reasons:
        status, reason = "stop", "; ".join(reasons)
    elif stopped or warned:
        status = "warn"
        reason = (
            f"{len(stopped) + len(warned)} of {len(values)} at or above PSI {warn:g} "
            f"({len(stopped)} at or above {stop:g}), "
            f"worst {ordered[0]} {_format_psi(values[ordered[0]])}"
        )
    else:
        status = "ok"
        reason = (
            f"largest PSI {_format_psi(values[ordered[0]])} ({ordered[0]}) below {warn:g}"
            if ordered
            else "nothing compared"
        )
    return DriftVerdict(
        status=status,
        psi=values,
        warned=warned,
        stopped=stopped,
        missing=missing,
        warn_threshold=warn,
        stop_threshold=stop,
        reason=reason,
    )


def _worst_first(psi: Mapping[str, float]) -> list[str]:
    return sorted(psi, key=lambda name: (not math.isnan(psi[name]), -psi[name]))


def _format_psi(value: float) -> str:
    return "missing" if math.isnan(value) else f"{value:.3f}"
