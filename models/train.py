"""LightGBM churn model on labelled snapshots, with a time-based holdout and calibration.

The labelled frame has one row per (``snapshot_date``, ``customer_id``), the
label ``churned`` and feature columns. Its snapshot dates are split by time:

* **holdout**: the most recent ``holdout_snapshots`` dates. Nothing is fitted on
  them; they exist only for evaluation.
* **validation**: the ``validation_snapshots`` dates just before the holdout. Its
  customers are divided by a seeded hash of ``customer_id``: a
  ``calibration_share`` fits the calibrator, the rest decides early stopping.
  The booster is never fitted on either part.
* **fit**: all earlier dates; the booster's trees are grown on these rows only.

With ``horizon_days`` set, a date whose label window (``date + horizon``)
reaches past the first date of a later slice is left out (purged), so no slice
is fitted on outcomes observed after a later slice's snapshot.

Training is deterministic: rows are sorted by (snapshot_date, customer_id), all
LightGBM seeds derive from ``TrainConfig.seed`` and LightGBM runs with
``deterministic=True`` and ``force_row_wise=True``; the same data and seed give
byte-identical booster text.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import polars as pl

from models.calibration import CALIBRATION_METHODS, CalibrationMethod, Calibrator
from models.encoding import (
    FeatureEncoding,
    FeatureError,
    FeatureMismatchError,
    FeatureValueError,
    FloatArray,
    fit_categories,
)

__all__ = [
    "FeatureError",
    "FeatureMismatchError",
    "FeatureValueError",
    "TrainConfig",
    "TrainedModel",
    "TrainingDataError",
    "holdout_rows",
    "time_split",
    "train_model",
    "training_rows",
]

logger = logging.getLogger(__name__)

DATE_COLUMN = "snapshot_date"
ID_COLUMN = "customer_id"
LABEL_COLUMN = "churned"


class TrainingDataError(ValueError):
    """The labelled frame cannot be trained on; the message says what and how many rows."""


@dataclass(frozen=True)
class TrainConfig:
    """How to split, fit and calibrate. Defaults suit tens of thousands of rows or more."""

    seed: int
    holdout_snapshots: int = 2
    validation_snapshots: int = 1
    calibration_share: float = 0.5
    calibration: CalibrationMethod = "platt"
    horizon_days: int | None = None
    num_leaves: int = 31
    learning_rate: float = 0.05
    n_estimators: int = 500
    early_stopping_rounds: int = 50
    min_child_samples: int = 50
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    max_bin: int = 255
    min_data_per_group: int = 50
    cat_smooth: float = 10.0
    scale_pos_weight: float = 1.0
    num_threads: int = 2

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not 0 <= self.seed < 2**31:
            problems.append(f"seed must be in [0, 2**31), got {self.seed}")
        if self.holdout_snapshots < 1:
            problems.append("holdout_snapshots must be at least 1")
        if self.validation_snapshots < 1:
            problems.append("validation_snapshots must be at least 1")
        if not 0.0 < self.calibration_share < 1.0:
            problems.append("calibration_share must be strictly between 0 and 1")
        if self.calibration not in CALIBRATION_METHODS:
            problems.append(f"calibration must be one of {CALIBRATION_METHODS}")
        if self.horizon_days is not None and self.horizon_days < 1:
            problems.append("horizon_days must be at least 1 when given")
        if self.n_estimators < 1 or self.early_stopping_rounds < 1:
            problems.append("n_estimators and early_stopping_rounds must be at least 1")
        if not 0.0 < self.feature_fraction <= 1.0 or not 0.0 < self.bagging_fraction <= 1.0:
            problems.append("feature_fraction and bagging_fraction must be in (0, 1]")
        if self.num_leaves < 2 or self.min_child_samples < 1 or self.num_threads < 1:
            problems.append("num_leaves >= 2, min_child_samples >= 1 and num_threads >= 1")
        if problems:
            raise ValueError("invalid TrainConfig: " + "; ".join(problems))

    def lightgbm_params(self) -> dict[str, Any]:
        """The LightGBM parameters, every seed fixed."""
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "boosting": "gbdt",
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "min_data_per_group": self.min_data_per_group,
            "cat_smooth": self.cat_smooth,
            "scale_pos_weight": self.scale_pos_weight,
            "seed": self.seed,
            "bagging_seed": self.seed,
            "feature_fraction_seed": self.seed,
            "data_random_seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass
class TrainedModel:
    """A fitted booster with its feature encoding, calibrator and training window."""

    booster: lgb.Booster
    features: list[str]
    categorical: list[str]
    categories: dict[str, list[str]]
    calibrator: Calibrator
    params: dict[str, Any]
    best_iteration: int
    train_dates: list[date]
    holdout_dates: list[date]
    validation_dates: list[date] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)

    @property
    def encoding(self) -> FeatureEncoding:
        """The feature list and category lists that turn frames into matrices."""
        return FeatureEncoding(tuple(self.features), tuple(self.categorical), self.categories)

    def booster_text(self) -> str:
        """The booster in LightGBM's text format (what the registry stores)."""
        return str(self.booster.model_to_string())

    def matrix(self, frame: pl.DataFrame, *, allow_extra: bool = True) -> FloatArray:
        """The feature matrix for ``frame``.

        Raises :class:`FeatureMismatchError` naming the missing features and the
        frame's columns the model does not know. Columns beyond the features are
        ignored unless ``allow_extra=False`` (then only key and label columns may
        accompany the features).
        """
        return self.encoding.matrix(frame, allow_extra=allow_extra)

    def predict_raw(self, frame: pl.DataFrame, *, allow_extra: bool = True) -> FloatArray:
        """The booster's uncalibrated churn probabilities."""
        raw = self.booster.predict(self.matrix(frame, allow_extra=allow_extra))
        return np.asarray(raw, dtype=np.float64)

    def predict_proba(self, frame: pl.DataFrame, *, allow_extra: bool = True) -> FloatArray:
        """Calibrated churn probabilities: read them as probabilities."""
        return self.calibrator.apply(self.predict_raw(frame, allow_extra=allow_extra))

    def contributions(self, frame: pl.DataFrame, *, allow_extra: bool = True) -> FloatArray:
        """Exact TreeSHAP contributions in raw-score (log-odds) space.

        Shape ``(n, len(features) + 1)``; the last column is the expected value, and
        each row sums to the raw score. About 2,500 rows/s on 2 threads: use it for the
        rows that need reasons, not for everyone.
        """
        values = self.booster.predict(
            self.matrix(frame, allow_extra=allow_extra), pred_contrib=True
        )
        return np.asarray(values, dtype=np.float64).reshape(frame.height, len(self.features) + 1)

    def unseen_categories(self, frame: pl.DataFrame) -> dict[str, int]:
        """Rows per categorical feature with a value not seen in training (scored as missing)."""
        return self.encoding.unseen_categories(frame)


def _snapshot_dates(frame: pl.DataFrame | pl.LazyFrame) -> list[date]:
    lazy = frame.lazy() if isinstance(frame, pl.DataFrame) else frame
    dates = lazy.select(pl.col(DATE_COLUMN).drop_nulls().unique().sort()).collect()
    return [d for d in dates.to_series().to_list() if d is not None]


def _purge(candidates: Sequence[date], boundary: date, horizon_days: int | None) -> list[date]:
    if horizon_days is None:
        return list(candidates)
    horizon = timedelta(days=horizon_days)
    return [d for d in candidates if d + horizon <= boundary]


def time_split(
    frame: pl.DataFrame | pl.LazyFrame,
    holdout_snapshots: int,
    *,
    horizon_days: int | None = None,
) -> tuple[list[date], list[date]]:
    """Training dates and holdout dates (the most recent ``holdout_snapshots``), both sorted.

    Every training date is earlier than every holdout date. With ``horizon_days``
    a training date whose label window ends after the first holdout date is left
    out of both lists.
    """
    if holdout_snapshots < 1:
        raise ValueError("holdout_snapshots must be at least 1")
    dates = _snapshot_dates(frame)
    if len(dates) <= holdout_snapshots:
        raise TrainingDataError(
            f"{len(dates)} distinct {DATE_COLUMN} values: need more than the "
            f"{holdout_snapshots} holdout snapshot(s) to have anything to train on"
        )
    holdout = dates[-holdout_snapshots:]
    train = _purge(dates[:-holdout_snapshots], holdout[0], horizon_days)
    if not train:
        raise TrainingDataError(
            f"no training snapshot's label window (horizon {horizon_days} days) ends by the "
            f"first holdout date {holdout[0]}: add earlier snapshots"
        )
    return train, holdout


def _rows_on(frame: pl.DataFrame, dates: Sequence[date]) -> pl.DataFrame:
    return frame.filter(pl.col(DATE_COLUMN).is_in(list(dates)))


def training_rows(frame: pl.DataFrame, model: TrainedModel) -> pl.DataFrame:
    """The rows of ``frame`` on the model's training dates (fit and validation)."""
    return _rows_on(frame, model.train_dates)


def holdout_rows(frame: pl.DataFrame, model: TrainedModel) -> pl.DataFrame:
    """The rows of ``frame`` on the model's holdout dates, sorted by date and customer."""
    rows = _rows_on(frame, model.holdout_dates).sort(DATE_COLUMN, ID_COLUMN)
    if rows.height == 0:
        raise TrainingDataError(
            f"frame of {frame.height} rows has no rows on the holdout dates "
            f"{[d.isoformat() for d in model.holdout_dates]}"
        )
    return rows


def customer_fraction(customer_ids: npt.NDArray[np.int64], seed: int) -> FloatArray:
    """A stable pseudo-random number in [0, 1) per customer (splitmix64 of id and seed)."""
    x = customer_ids.astype(np.uint64) ^ np.uint64(seed)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return np.asarray((x >> np.uint64(11)).astype(np.float64) / float(2**53), dtype=np.float64)


def _check_frame(frame: pl.DataFrame, features: Sequence[str]) -> None:
    required = [DATE_COLUMN, ID_COLUMN, LABEL_COLUMN, *features]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise TrainingDataError(
            f"labelled frame of {frame.height} rows lacks columns {missing}; has {frame.columns}"
        )
    if not isinstance(frame.schema[DATE_COLUMN], pl.Date):
        raise TrainingDataError(
            f"{DATE_COLUMN} is {frame.schema[DATE_COLUMN]}, expected Date ({frame.height} rows)"
        )
    nulls = frame.select(
        pl.col(DATE_COLUMN).null_count(),
        pl.col(ID_COLUMN).null_count(),
        pl.col(LABEL_COLUMN).null_count(),
    ).row(0, named=True)
    bad = {name: count for name, count in nulls.items() if count}
    if bad:
        raise TrainingDataError(
            "labelled frame has nulls in key or label columns: "
            + ", ".join(f"{name}: {count} of {frame.height} rows" for name, count in bad.items())
        )
    label_dtype = frame.schema[LABEL_COLUMN]
    if not isinstance(label_dtype, pl.Boolean):
        if not label_dtype.is_integer():
            raise TrainingDataError(
                f"{LABEL_COLUMN} is {label_dtype}, expected Boolean ({frame.height} rows)"
            )
        not_binary = frame.select((~pl.col(LABEL_COLUMN).is_in([0, 1])).sum()).item()
        if not_binary:
            raise TrainingDataError(
                f"{LABEL_COLUMN} has {not_binary} values other than 0 and 1 of {frame.height} rows"
            )
    duplicates = frame.height - frame.select(DATE_COLUMN, ID_COLUMN).n_unique()
    if duplicates:
        raise TrainingDataError(
            f"labelled frame has {duplicates} duplicate ({DATE_COLUMN}, {ID_COLUMN}) rows "
            f"of {frame.height}"
        )


def _labels(frame: pl.DataFrame) -> FloatArray:
    return np.asarray(frame.get_column(LABEL_COLUMN).cast(pl.Float64).to_numpy(), dtype=np.float64)


def _require_both_classes(name: str, frame: pl.DataFrame, dates: Sequence[date]) -> None:
    churned = int(frame.get_column(LABEL_COLUMN).cast(pl.Int64).sum())
    if churned == 0 or churned == frame.height:
        raise TrainingDataError(
            f"the {name} slice ({frame.height} rows on {[d.isoformat() for d in dates]}) has "
            f"{churned} churners: it needs both churners and stayers"
        )


def train_model(
    frame: pl.DataFrame,
    features: Sequence[str],
    categorical: Sequence[str],
    config: TrainConfig,
    *,
    event_types: Sequence[str] = (),
) -> TrainedModel:
    """Fit, early-stop and calibrate a churn model on labelled snapshots (see module doc).

    Columns other than the key, the label and ``features`` are ignored.
    ``event_types`` are the activity event types the feature columns were built
    for; they are kept with the model so scoring builds the same columns.
    """
    features = list(features)
    requested = set(categorical)
    unknown = sorted(requested - set(features))
    if not features:
        raise TrainingDataError("no features given")
    if unknown:
        raise TrainingDataError(f"categorical features {unknown} are not in the feature list")
    categorical = [name for name in features if name in requested]
    _check_frame(frame, features)
    data = frame.select(DATE_COLUMN, ID_COLUMN, LABEL_COLUMN, *features).sort(
        DATE_COLUMN, ID_COLUMN
    )

    train_dates, holdout_dates = time_split(
        data, config.holdout_snapshots, horizon_days=config.horizon_days
    )
    if len(train_dates) <= config.validation_snapshots:
        raise TrainingDataError(
            f"{len(train_dates)} training snapshot(s) before the holdout: need more than the "
            f"{config.validation_snapshots} validation snapshot(s) to have dates to fit on"
        )
    validation_dates = train_dates[-config.validation_snapshots :]
    fit_dates = _purge(
        train_dates[: -config.validation_snapshots], validation_dates[0], config.horizon_days
    )
    if not fit_dates:
        raise TrainingDataError(
            f"no snapshot's label window (horizon {config.horizon_days} days) ends by the first "
            f"validation date {validation_dates[0]}: add earlier snapshots"
        )
    used = set(fit_dates) | set(validation_dates)
    purged = [d for d in _snapshot_dates(data) if d not in used and d not in set(holdout_dates)]
    if purged:
        logger.info(
            "left out %d snapshot date(s) whose label windows overlap a later slice", len(purged)
        )

    fit_rows = _rows_on(data, fit_dates)
    validation_rows = _rows_on(data, validation_dates)
    to_calibration = (
        customer_fraction(validation_rows.get_column(ID_COLUMN).to_numpy(), config.seed)
        < config.calibration_share
    )
    calibration_rows = validation_rows.filter(pl.Series(to_calibration))
    stopping_rows = validation_rows.filter(pl.Series(~to_calibration))
    _require_both_classes("fit", fit_rows, fit_dates)
    _require_both_classes("early-stopping", stopping_rows, validation_dates)
    _require_both_classes("calibration", calibration_rows, validation_dates)

    encoding = FeatureEncoding(
        tuple(features), tuple(categorical), fit_categories(fit_rows, categorical)
    )
    params = config.lightgbm_params()
    fit_set = lgb.Dataset(
        encoding.matrix(fit_rows, allow_extra=True),
        label=_labels(fit_rows),
        feature_name=features,
        categorical_feature=encoding.categorical_indices,
        params=params,
        free_raw_data=True,
    )
    stopping_set = lgb.Dataset(
        encoding.matrix(stopping_rows, allow_extra=True),
        label=_labels(stopping_rows),
        reference=fit_set,
        params=params,
    )
    trained = lgb.train(
        params,
        fit_set,
        num_boost_round=config.n_estimators,
        valid_sets=[stopping_set],
        valid_names=["early_stopping"],
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    best_iteration = int(trained.best_iteration) if trained.best_iteration > 0 else None
    booster_text = trained.model_to_string(num_iteration=best_iteration or -1)
    booster = lgb.Booster(model_str=booster_text)
    best = int(booster.num_trees())

    raw = np.asarray(
        booster.predict(encoding.matrix(calibration_rows, allow_extra=True)), dtype=np.float64
    )
    calibrator = Calibrator.fit(raw, _labels(calibration_rows), config.calibration)
    logger.info(
        "trained %d trees on %d rows; early stopping on %d rows, calibration on %d rows",
        best,
        fit_rows.height,
        stopping_rows.height,
        calibration_rows.height,
    )
    return TrainedModel(
        booster=booster,
        features=features,
        categorical=categorical,
        categories={name: list(levels) for name, levels in encoding.categories.items()},
        calibrator=calibrator,
        params={
            "lightgbm": params,
            "train_config": config.to_dict(),
            "fit_dates": [d.isoformat() for d in fit_dates],
            "purged_dates": [d.isoformat() for d in purged],
            "rows": {
                "fit": fit_rows.height,
                "early_stopping": stopping_rows.height,
                "calibration": calibration_rows.height,
                "holdout": _rows_on(data, holdout_dates).height,
            },
        },
        best_iteration=best,
        train_dates=sorted(used),
        holdout_dates=holdout_dates,
        validation_dates=validation_dates,
        event_types=list(event_types),
    )
