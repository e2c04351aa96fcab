"""Plain-language reasons for listed customers from exact LightGBM contributions.

For each listed customer the exact per-feature contributions (``pred_contrib``, TreeSHAP,
raw-score space) are computed. Candidates are the features with a *positive*
contribution that have a reason template in the feature registry, taken from the largest
down. A candidate becomes a reason when

* its template renders a sentence for the customer's own numbers (the registry's
  ``reason_applies``; for features compared with what is typical, a value far enough from
  tonight's median over the whole scored population, in the feature's direction),
* for such a comparison, the model confirms it: with the typical value in place of the
  customer's own, the customer would score strictly lower (:func:`unconfirmed_comparisons`),
* and no stronger reason on the same *topic* was given (one reason per topic: "8
  complaints in the last 90 days" and "6 complaints in the last 30 days" are one reason).

Context reasons (who the customer is: tenure, plan, price, segment, value) only fill the
slots the actionable reasons leave, and only when weaker than every actionable reason
given, so the reasons always read strongest first.

Exact contributions cost about 2,500 rows/s on 2 cores, so they are computed for the
listed customers only; everyone else gets ``reason_source = "none"`` and no reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from features.registry import Typical, get_feature, render_reason
from models.encoding import require_model_features

REASON_SOURCE_EXACT = "exact"
REASON_SOURCE_NONE = "none"

DEFAULT_BATCH_ROWS = 5_000
"""Rows per ``pred_contrib`` call: bounds memory (rows x features floats) per batch."""

FEATURE_VALUES_COLUMN = "feature_values"
"""Struct column of :func:`explain_listed`: the customer's feature row (for action rules)."""
TYPICAL_VALUES_COLUMN = "typical_values"
"""Struct column of :func:`explain_listed`: tonight's typical (median) values it compared with."""


class ExplainableModel(Protocol):
    """What reasons need from a trained model (``models.train.TrainedModel`` has it).

    ``predict_proba`` scores the what-if rows that confirm a comparison with typical; a
    model that also has ``predict_raw`` (uncalibrated, strictly monotone in the score) is
    scored with that instead, so that flat stretches of a calibration cannot hide a change.
    """

    @property
    def features(self) -> list[str]: ...

    def contributions(self, frame: pl.DataFrame) -> npt.NDArray[np.float64]: ...

    def predict_proba(self, frame: pl.DataFrame) -> npt.NDArray[np.float64]: ...


@dataclass(frozen=True)
class ReasonTraits:
    """What reason selection needs to know about a feature that has a reason template."""

    topic: str
    """At most one reason per topic."""
    context: bool = False
    """Context reasons rank after every actionable reason."""


ReasonRenderer = Callable[[str, Mapping[str, Any], Mapping[str, Any]], str | None]
"""``(feature, customer's row, typical values) -> sentence or None``."""
TraitsLookup = Callable[[str], ReasonTraits | None]
"""``feature -> its traits``, None when it has no reason template."""


def reason_columns(top_n: int = 3) -> list[str]:
    """``reason_1_code, reason_1, ..., reason_<top_n>_code, reason_<top_n>``."""
    return [c for k in range(1, top_n + 1) for c in (f"reason_{k}_code", f"reason_{k}")]


def reasons_schema(top_n: int = 3) -> pl.Schema:
    """Schema of the reason columns :func:`explain_listed` returns (before the value structs)."""
    columns: dict[str, pl.DataType] = {"customer_id": pl.Int64(), "reason_source": pl.String()}
    columns.update({c: pl.String() for c in reason_columns(top_n)})
    return pl.Schema(columns)


def registry_traits(name: str) -> ReasonTraits | None:
    """The feature registry's topic and kind of ``name``'s reason; None without a template."""
    try:
        feature = get_feature(name)
    except (KeyError, LookupError, ValueError):
        return None
    if feature.reason is None:
        return None
    return ReasonTraits(topic=feature.reason_topic, context=feature.context)


def registry_render(name: str, row: Mapping[str, Any], typical: Mapping[str, Any]) -> str | None:
    """The feature registry's sentence for ``name`` with this customer's numbers."""
    return render_reason(name, row, typical)


def _comparison(name: str) -> Typical | None:
    """How the registry compares ``name``'s reason with tonight's typical value, if it does."""
    try:
        return get_feature(name).typical
    except (KeyError, LookupError, ValueError):
        return None


def typical_values(features: pl.DataFrame, names: Sequence[str]) -> dict[str, float]:
    """Tonight's typical value of each of ``names``: its median over ``features`` (nulls
    ignored). Features whose values are all null are left out."""
    numeric = [n for n in names if n in features.columns and features.schema[n].is_numeric()]
    if not numeric or features.height == 0:
        return {}
    medians = features.select(pl.col(numeric).cast(pl.Float64).median()).row(0, named=True)
    return {name: float(value) for name, value in medians.items() if value is not None}


def exact_contributions(
    model: ExplainableModel, frame: pl.DataFrame, batch_rows: int = DEFAULT_BATCH_ROWS
) -> npt.NDArray[np.float64]:
    """Exact contributions, shape ``(rows, features)``: the bias column is dropped."""
    n_features = len(model.features)
    if frame.height == 0:
        return np.zeros((0, n_features), dtype=np.float64)
    parts: list[npt.NDArray[np.float64]] = []
    for start in range(0, frame.height, batch_rows):
        batch = np.asarray(model.contributions(frame.slice(start, batch_rows)), dtype=np.float64)
        if batch.ndim != 2 or batch.shape[1] != n_features + 1:
            raise ValueError(
                f"model contributions have shape {batch.shape}; expected (rows, {n_features + 1})"
                " (one column per feature plus the bias)"
            )
        parts.append(batch[:, :n_features])
    return np.concatenate(parts, axis=0)


def candidate_order(
    contributions: npt.NDArray[np.float64], eligible: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Per row, feature indices by descending contribution, and how many qualify.

    A feature qualifies when it is ``eligible`` (has a reason template; per feature, or
    per row and feature) and its contribution is strictly positive. Row ``i``'s candidates are
    ``order[i, :n_candidates[i]]``.
    """
    allowed = eligible if eligible.ndim == 2 else eligible[np.newaxis, :]
    qualifies = (contributions > 0.0) & allowed
    masked = np.where(qualifies, contributions, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    return order, qualifies.sum(axis=1)


def _scores(model: ExplainableModel, frame: pl.DataFrame) -> npt.NDArray[np.float64]:
    raw = getattr(model, "predict_raw", None)
    values = raw(frame) if callable(raw) else model.predict_proba(frame)
    return np.asarray(values, dtype=np.float64).reshape(-1)


def unconfirmed_comparisons(
    model: ExplainableModel,
    rows: pl.DataFrame,
    contributions: npt.NDArray[np.float64],
    typical: Mapping[str, float],
    comparisons: Mapping[str, Typical],
) -> npt.NDArray[np.bool_]:
    """Where a comparison with typical would not explain the risk, shape ``(rows, features)``.

    For each row and feature compared with typical (``comparisons``) whose contribution is
    positive and whose value differs enough from ``typical``, the row is scored again with
    the feature set to its typical value. The comparison is *confirmed* when that what-if
    score is strictly lower: the customer's own (unusual) value is what raises the risk.
    True marks the candidates that were checked and not confirmed; everything else False.
    One batched prediction for all checked pairs (at most rows x compared features).
    """
    names = list(model.features)
    unconfirmed = np.zeros(contributions.shape, dtype=bool)
    pieces: list[pl.DataFrame] = []
    checked: list[tuple[npt.NDArray[np.intp], int]] = []
    for j, name in enumerate(names):
        spec, usual = comparisons.get(name), typical.get(name)
        if spec is None or usual is None:
            continue
        values = rows.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
        index = np.flatnonzero((contributions[:, j] > 0.0) & spec.differs_array(values, usual))
        if index.size:
            what_if = rows.select(pl.all().gather(index.tolist()))
            pieces.append(what_if.with_columns(pl.lit(usual, dtype=pl.Float64).alias(name)))
            checked.append((index, j))
    if not pieces:
        return unconfirmed
    base = _scores(model, rows)
    what_if_scores = _scores(model, pl.concat(pieces, how="vertical_relaxed"))
    start = 0
    for index, j in checked:
        lower = what_if_scores[start : start + index.size] < base[index]
        unconfirmed[index[~lower], j] = True
        start += index.size
    return unconfirmed


def select_reasons(
    candidates: Sequence[int],
    names: Sequence[str],
    traits: Sequence[ReasonTraits | None],
    render: ReasonRenderer,
    row: Mapping[str, Any],
    typical: Mapping[str, Any],
    top_n: int,
) -> list[tuple[str, str]]:
    """``(code, sentence)`` of one customer's reasons (at most ``top_n``).

    ``candidates`` are indices into ``names`` / ``traits``, strongest contribution first;
    ``render`` gives a candidate's sentence for the customer's ``row`` or None.

    One reason per topic: the strongest candidate of the topic whose sentence renders.
    Actionable reasons come first; context reasons fill the remaining slots only when
    weaker than every actionable reason given (candidates are in descending order, so a
    context reason is usable only once no actionable reason follows it). A context reason
    left out for being stronger does not count for its topic.
    """
    used_topics: set[str] = set()

    def pick(positions: range, context: bool, wanted: int) -> list[tuple[int, str, str]]:
        """(position, code, sentence) of up to ``wanted`` new-topic reasons of one kind."""
        picked: list[tuple[int, str, str]] = []
        for position in positions:
            if len(picked) == wanted:
                break
            j = candidates[position]
            trait = traits[j]
            if trait is None or trait.context != context or trait.topic in used_topics:
                continue
            sentence = render(names[j], row, typical)
            if sentence:
                used_topics.add(trait.topic)
                picked.append((position, names[j], sentence))
        return picked

    actionable = pick(range(len(candidates)), context=False, wanted=top_n)
    # Context reasons only after the weakest actionable one; one left out because it was
    # stronger does not take its topic from a weaker one that can fill a slot.
    after = actionable[-1][0] + 1 if actionable else 0
    fill = pick(range(after, len(candidates)), context=True, wanted=top_n - len(actionable))
    return [(code, sentence) for _, code, sentence in actionable + fill]


def explain_listed(
    model: ExplainableModel,
    features: pl.DataFrame,
    customer_ids: Sequence[int] | pl.Series,
    top_n: int = 3,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    traits: TraitsLookup = registry_traits,
    render: ReasonRenderer = registry_render,
    typical: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """Top ``top_n`` reasons pushing churn risk up for each of ``customer_ids``.

    ``features`` is the scoring feature frame of the whole scored population
    (``customer_id`` plus the model's features and any other columns the templates
    use); tonight's typical values are its medians unless ``typical`` gives them. A
    reason that compares with typical is given only when confirmed by the what-if check
    of :func:`unconfirmed_comparisons`.
    Returns one row per requested customer, in the order given, with ``customer_id``,
    ``reason_source`` (``"exact"``), ``reason_k_code`` (the feature name, stable) /
    ``reason_k`` (the sentence) for ``k = 1..top_n`` (slots without a reason are null),
    and two struct columns for the action rules: ``feature_values`` (the customer's
    feature row) and ``typical_values`` (the typical values compared with; absent when
    there are none).
    """
    if top_n < 1:
        raise ValueError(f"top_n must be at least 1, got {top_n}")
    require_model_features(features, model.features)
    wanted = pl.DataFrame({"customer_id": pl.Series(customer_ids, dtype=pl.Int64)})
    n_duplicates = wanted.height - wanted["customer_id"].n_unique()
    if n_duplicates:
        raise ValueError(f"customer_ids to explain repeat in {n_duplicates} row(s)")
    rows = wanted.join(
        features.with_columns(pl.col("customer_id").cast(pl.Int64)),
        on="customer_id",
        how="inner",
        maintain_order="left",
    )
    if rows.height != wanted.height:
        absent = wanted.height - rows.height
        raise ValueError(
            f"{absent} customer(s) to explain are not in the feature frame "
            f"(e.g. {wanted.join(rows, on='customer_id', how='anti')['customer_id'][0]})"
        )

    names = list(model.features)
    feature_traits = [traits(name) for name in names]
    eligible = np.array([t is not None for t in feature_traits], dtype=bool)
    comparisons = {
        name: spec
        for name, trait in zip(names, feature_traits, strict=True)
        if trait is not None and (spec := _comparison(name)) is not None
    }
    if typical is None:
        typical = typical_values(features, list(comparisons)) if rows.height else {}
    contributions = exact_contributions(model, rows, batch_rows)
    unconfirmed = unconfirmed_comparisons(model, rows, contributions, typical, comparisons)
    order, n_candidates = candidate_order(contributions, eligible[np.newaxis, :] & ~unconfirmed)

    slots: dict[str, list[str | None]] = {c: [] for c in reason_columns(top_n)}
    for i in range(rows.height):
        found: list[tuple[str, str]] = []
        if n_candidates[i]:
            found = select_reasons(
                order[i, : n_candidates[i]].tolist(),
                names,
                feature_traits,
                render,
                rows.row(i, named=True),
                typical,
                top_n,
            )
        for k in range(top_n):
            code, sentence = found[k] if k < len(found) else (None, None)
            slots[f"reason_{k + 1}_code"].append(code)
            slots[f"reason_{k + 1}"].append(sentence)

    out = pl.DataFrame(
        {
            "customer_id": rows["customer_id"],
            "reason_source": [REASON_SOURCE_EXACT] * rows.height,
            **slots,
        },
        schema=reasons_schema(top_n),
    )
    value_columns = [c for c in rows.columns if c != "customer_id"]
    if value_columns:
        out = out.with_columns(
            rows.select(pl.struct(value_columns)).to_series().alias(FEATURE_VALUES_COLUMN)
        )
    if typical:
        out = out.with_columns(
            pl.struct(
                pl.lit(float(value), dtype=pl.Float64).alias(name)
                for name, value in typical.items()
            ).alias(TYPICAL_VALUES_COLUMN)
        )
    return out
