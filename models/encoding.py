"""Feature matrices for LightGBM, encoded the same way at training and at scoring.

Numeric features become float64 with nulls as NaN (LightGBM's missing value).
Categorical features are mapped to integer codes through a category list fixed
at training time and stored with the model: the code of a value is its position
in that list, and a null or a value never seen in training becomes NaN, so
LightGBM treats it as missing instead of guessing a category.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

FloatArray = npt.NDArray[np.float64]

ID_COLUMNS = ("snapshot_date", "as_of", "customer_id", "churned")
"""Key and label columns that may accompany features; they are never features themselves."""

_CATEGORICAL_DTYPES = (pl.String, pl.Categorical, pl.Enum, pl.Null)


class FeatureError(ValueError):
    """Input features that a model cannot use."""


class FeatureMismatchError(FeatureError):
    """The frame's columns do not match the model's feature list."""

    def __init__(self, missing: Sequence[str], extra: Sequence[str], context: str = "") -> None:
        self.missing = list(missing)
        self.extra = list(extra)
        where = f" ({context})" if context else ""
        super().__init__(
            f"feature columns do not match the model{where}: "
            f"missing {len(self.missing)} feature(s) {_listing(self.missing)}; "
            f"extra {len(self.extra)} column(s) not in the model {_listing(self.extra)}"
        )


def _listing(names: Sequence[str], limit: int = 25) -> str:
    shown = ", ".join(names[:limit])
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return f"[{shown}{more}]"


class FeatureValueError(FeatureError):
    """A feature column has a type or values the model cannot take."""


def require_model_features(frame: pl.DataFrame, features: Sequence[str]) -> None:
    """Raise ``ValueError`` unless ``frame`` has ``customer_id`` and every one of ``features``."""
    if "customer_id" not in frame.columns:
        raise ValueError("the feature frame has no customer_id column")
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(
            f"the feature frame lacks {len(missing)} model feature(s): {', '.join(missing[:10])}"
        )


def _is_categorical_dtype(dtype: pl.DataType) -> bool:
    return isinstance(dtype, _CATEGORICAL_DTYPES)


def _is_numeric_dtype(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or isinstance(dtype, pl.Boolean | pl.Null)


def fit_categories(frame: pl.DataFrame, categorical: Sequence[str]) -> dict[str, list[str]]:
    """The sorted distinct non-null values of each categorical column: the category lists."""
    categories: dict[str, list[str]] = {}
    for name in categorical:
        values = (
            frame.select(pl.col(name).cast(pl.String).drop_nulls().unique().sort())
            .to_series()
            .to_list()
        )
        categories[name] = [str(v) for v in values]
    return categories


@dataclass(frozen=True)
class FeatureEncoding:
    """The ordered feature list and the category lists of the categorical features."""

    features: tuple[str, ...]
    categorical: tuple[str, ...]
    categories: Mapping[str, Sequence[str]]

    def __post_init__(self) -> None:
        duplicates = sorted({f for f in self.features if self.features.count(f) > 1})
        if duplicates:
            raise FeatureError(f"feature list names {duplicates} more than once")
        reserved = sorted(set(self.features) & set(ID_COLUMNS))
        if reserved:
            raise FeatureError(f"key or label columns {reserved} cannot be features")
        unknown = sorted(set(self.categorical) - set(self.features))
        if unknown:
            raise FeatureError(f"categorical features {unknown} are not in the feature list")
        without_levels = sorted(set(self.categorical) - set(self.categories))
        if without_levels:
            raise FeatureError(f"categorical features {without_levels} have no category list")

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of the categorical features in the feature list."""
        return [self.features.index(name) for name in self.categorical]

    def check_columns(self, frame: pl.DataFrame, *, allow_extra: bool = True) -> None:
        """Raise :class:`FeatureMismatchError` when a feature is missing from the frame.

        The error names the missing features and the frame's columns the model does
        not know (often the renamed ones). Other columns are ignored by default
        (scoring frames carry keys and columns for reason templates); with
        ``allow_extra=False`` any column besides the features and the key and label
        columns (:data:`ID_COLUMNS`) is refused too. Types are checked as well:
        categorical features must be text, the others numeric.
        """
        columns = list(frame.columns)
        missing = [f for f in self.features if f not in frame.schema]
        extra = [c for c in columns if c not in self.features and c not in ID_COLUMNS]
        if missing or (extra and not allow_extra):
            raise FeatureMismatchError(missing, extra, context=f"{frame.height} rows")
        wrong: list[str] = []
        for name in self.features:
            dtype = frame.schema[name]
            if name in self.categorical and not _is_categorical_dtype(dtype):
                wrong.append(f"{name} is {dtype}, expected a text (categorical) column")
            elif name not in self.categorical and not _is_numeric_dtype(dtype):
                wrong.append(f"{name} is {dtype}, expected a numeric column")
        if wrong:
            raise FeatureValueError("feature columns of the wrong type: " + "; ".join(wrong))

    def matrix(self, frame: pl.DataFrame, *, allow_extra: bool = True) -> FloatArray:
        """The float64 feature matrix, columns in feature-list order.

        Infinite numeric values are refused with the column and row count; nulls and
        NaN are missing values. Unseen categories become missing (see
        :meth:`unseen_categories` to count them).
        """
        self.check_columns(frame, allow_extra=allow_extra)
        numeric = [f for f in self.features if f not in self.categorical]
        if numeric and frame.height:
            infinite = frame.select(
                [pl.col(name).cast(pl.Float64).is_infinite().sum().alias(name) for name in numeric]
            ).row(0, named=True)
            bad = {name: int(count) for name, count in infinite.items() if count}
            if bad:
                raise FeatureValueError(
                    "infinite values in numeric features (rows per column): "
                    + ", ".join(f"{name}: {count} of {frame.height}" for name, count in bad.items())
                )
        expressions = [self._expression(name) for name in self.features]
        values = frame.select(expressions).to_numpy(order="c")
        return np.ascontiguousarray(values, dtype=np.float64).reshape(
            frame.height, len(self.features)
        )

    def unseen_categories(self, frame: pl.DataFrame) -> dict[str, int]:
        """Rows per categorical feature whose non-null value is not in the category list."""
        counts: dict[str, int] = {}
        for name in self.categorical:
            levels = list(self.categories[name])
            unseen = frame.select(
                (pl.col(name).is_not_null() & ~pl.col(name).cast(pl.String).is_in(levels)).sum()
            ).item()
            if unseen:
                counts[name] = int(unseen)
        return counts

    def _expression(self, name: str) -> pl.Expr:
        if name not in self.categorical:
            return pl.col(name).cast(pl.Float64)
        levels = list(self.categories[name])
        return (
            pl.col(name)
            .cast(pl.String)
            .replace_strict(
                levels,
                [float(i) for i in range(len(levels))],
                default=None,
                return_dtype=pl.Float64,
            )
            .alias(name)
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description of the encoding."""
        return {
            "features": list(self.features),
            "categorical": list(self.categorical),
            "categories": {name: list(self.categories[name]) for name in self.categorical},
        }
