"""Reasons: features that really push this customer's score up, in plain words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import pytest

from features.registry import get_feature, render_reason
from models.reasons import (
    FEATURE_VALUES_COLUMN,
    TYPICAL_VALUES_COLUMN,
    ReasonTraits,
    candidate_order,
    explain_listed,
    reason_columns,
    select_reasons,
    typical_values,
    unconfirmed_comparisons,
)
from models.train import TrainedModel

CODES = [f"reason_{k}_code" for k in (1, 2, 3)]


def what_if_lowers(model: TrainedModel, row: Mapping[str, Any], name: str, value: float) -> bool:
    """Whether the model scores this customer lower with ``name`` set to ``value``."""
    frame = pl.DataFrame([row])
    changed = frame.with_columns(pl.lit(value, dtype=pl.Float64).alias(name))
    return bool(model.predict_raw(changed)[0] < model.predict_raw(frame)[0])


def expected_reasons(
    model: TrainedModel,
    by_name: Mapping[str, float],
    row: Mapping[str, Any],
    typical: Mapping[str, float],
) -> list[str]:
    """The documented selection, written out plainly: strongest first, one per topic, a
    comparison with typical only when the model scores the typical value lower, actionable
    before context, context only when weaker than every actionable reason."""
    ranked = sorted(((v, n) for n, v in by_name.items() if v > 0), reverse=True)
    topics: set[str] = set()

    def usable(name: str) -> bool:
        feature = get_feature(name)
        if feature.reason is None or feature.reason_topic in topics:
            return False
        if render_reason(name, row, typical) is None:
            return False
        return feature.typical is None or what_if_lowers(model, row, name, typical[name])

    actionable: list[tuple[float, str]] = []
    for value, name in ranked:
        if not get_feature(name).context and usable(name):
            topics.add(get_feature(name).reason_topic)
            actionable.append((value, name))
    actionable = actionable[:3]
    floor = actionable[-1][0] if actionable else np.inf
    context: list[str] = []
    for value, name in ranked:
        if get_feature(name).context and value < floor and usable(name):
            topics.add(get_feature(name).reason_topic)
            context.append(name)
    return [n for _, n in actionable] + context[: 3 - len(actionable)]


def test_reasons_are_positive_top_contributions_one_per_topic(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    ids = scoring_features["customer_id"].head(150)
    reasons = explain_listed(trained_model, scoring_features, ids, batch_rows=64)
    assert reasons.columns == [
        "customer_id",
        "reason_source",
        *reason_columns(3),
        FEATURE_VALUES_COLUMN,
        TYPICAL_VALUES_COLUMN,
    ]
    assert reasons["customer_id"].to_list() == ids.to_list()
    assert set(reasons["reason_source"]) == {"exact"}
    # Typical is tonight's median over the whole frame, not over the explained customers.
    typical = typical_values(scoring_features, ["tenure_days", "customer_value"])
    assert typical == {
        "tenure_days": scoring_features["tenure_days"].median(),
        "customer_value": scoring_features["customer_value"].median(),
    }
    assert reasons[TYPICAL_VALUES_COLUMN][0] == typical

    rows = scoring_features.head(150)
    contributions = trained_model.contributions(rows)[:, :-1]
    names = trained_model.features
    n_with_reason = n_with_two = 0
    for i, (row, explained) in enumerate(
        zip(rows.iter_rows(named=True), reasons.iter_rows(named=True), strict=True)
    ):
        by_name = dict(zip(names, contributions[i], strict=True))
        codes = [explained[c] for c in CODES]
        given = [c for c in codes if c is not None]
        # Slots fill from the first; every reason has its sentence.
        assert codes[: len(given)] == given
        for k, code in enumerate(codes, start=1):
            assert (code is None) == (explained[f"reason_{k}"] is None)
        # Each reason pushes this customer's score up; the reasons read strongest first,
        # one per topic, and the sentences are the registry's.
        assert all(by_name[code] > 0 for code in given)
        assert [by_name[c] for c in given] == sorted((by_name[c] for c in given), reverse=True)
        assert len({get_feature(c).reason_topic for c in given}) == len(given)
        assert [explained[f"reason_{k}"] for k in range(1, len(given) + 1)] == [
            render_reason(code, row, typical) for code in given
        ]
        # Nothing better was skipped.
        assert given == expected_reasons(trained_model, by_name, row, typical)
        # Context reasons (tenure, segment, value) never come before an actionable one.
        kinds = [get_feature(c).context for c in given]
        assert kinds == sorted(kinds)
        n_with_reason += bool(given)
        n_with_two += len(given) >= 2
    assert n_with_reason > 100 and n_with_two > 50
    # The two open-complaint features are one topic: never both for one customer.
    both = reasons.filter(
        pl.concat_list(CODES).list.contains("open_complaints")
        & pl.concat_list(CODES).list.contains("oldest_open_complaint_days")
    )
    assert both.height == 0


def test_a_sentence_quotes_the_customers_own_numbers(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    reasons = explain_listed(trained_model, scoring_features, scoring_features["customer_id"])
    complaint = reasons.filter(pl.col("reason_1_code") == "open_complaints").head(1)
    assert complaint.height == 1
    customer = scoring_features.filter(pl.col("customer_id") == complaint["customer_id"][0])
    count = round(customer["open_complaints"][0])
    assert complaint["reason_1"][0].startswith(f"{count} complaint")
    # Context reasons appear, after the actionable ones, with the comparison with typical.
    tenure = reasons.filter(pl.concat_list(CODES).list.contains("tenure_days"))
    assert tenure.height > 0
    sentence = next(
        s
        for row in tenure.iter_rows(named=True)
        for k in (1, 2, 3)
        if row[f"reason_{k}_code"] == "tenure_days" and (s := row[f"reason_{k}"])
    )
    assert sentence.startswith("customer for only ") and "(typical: " in sentence


class Fixed:
    """A model with fixed contributions, scoring a row by the sum of its feature values."""

    def __init__(self, features: list[str], contributions: list[float]) -> None:
        self.features = features
        self._contributions = np.array([[*contributions, -1.0]])

    def contributions(self, frame: pl.DataFrame) -> np.ndarray:
        return np.repeat(self._contributions, frame.height, axis=0)

    def predict_proba(self, frame: pl.DataFrame) -> np.ndarray:
        return frame.select(pl.sum_horizontal(self.features)).to_series().to_numpy()


def test_an_injected_renderer_and_traits() -> None:
    def render(name: str, row: Mapping[str, Any], typical: Mapping[str, Any]) -> str | None:
        if name == "b" and row["customer_id"] == 2:
            return None
        return f"{name} for {row['customer_id']}"

    frame = pl.DataFrame(
        {"customer_id": [1, 2], "a": [1, 1], "b": [1, 1], "c": [1, 1], "d": [1, 1]}
    )
    out = explain_listed(
        Fixed(["a", "b", "c", "d"], [0.5, 0.9, -0.2, 0.1]),
        frame,
        [2, 1],
        top_n=2,
        traits=lambda n: None if n == "d" else ReasonTraits(topic=n),
        render=render,
    )
    assert out.select("customer_id", "reason_source", *reason_columns(2)).rows() == [
        (2, "exact", "a", "a for 2", None, None),  # b does not apply, c and d do not qualify
        (1, "exact", "b", "b for 1", "a", "a for 1"),
    ]
    assert out[FEATURE_VALUES_COLUMN][0] == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert TYPICAL_VALUES_COLUMN not in out.columns  # nothing compared with typical


def test_one_reason_per_topic_and_context_last() -> None:
    names = [
        "complaints_90d",
        "complaints_30d",
        "segment",
        "contacts_30d",
        "open_complaints",
        "current_mrr",
        "plan",
    ]
    traits = [
        ReasonTraits("complaints"),
        ReasonTraits("complaints"),
        ReasonTraits("segment", context=True),
        ReasonTraits("contacts"),
        ReasonTraits("open_complaints"),
        ReasonTraits("plan", context=True),
        ReasonTraits("plan", context=True),
    ]

    def render(name: str, row: Mapping[str, Any], typical: Mapping[str, Any]) -> str | None:
        return None if name in row.get("silent", ()) else name

    def pick(order: list[int], row: Mapping[str, Any], top_n: int = 3) -> list[str]:
        return [c for c, _ in select_reasons(order, names, traits, render, row, {}, top_n)]

    # "8 complaints in 90 days" and "6 in 30 days" are one reason: the stronger.
    assert pick([0, 1, 3], {}) == ["complaints_90d", "contacts_30d"]
    # When the stronger one does not render, the next of its topic may.
    assert pick([0, 1, 3], {"silent": ["complaints_90d"]}) == ["complaints_30d", "contacts_30d"]
    # A context reason stronger than an actionable one is left out rather than put first
    # or out of order; a weaker one fills a free slot.
    assert pick([2, 0, 3], {}) == ["complaints_90d", "contacts_30d"]
    assert pick([0, 3, 2], {}) == ["complaints_90d", "contacts_30d", "segment"]
    assert pick([0, 3, 4, 2], {}) == ["complaints_90d", "contacts_30d", "open_complaints"]
    # A context reason left out for being stronger leaves its topic to a weaker one.
    assert pick([5, 4, 6], {}) == ["open_complaints", "plan"]
    assert pick([4, 5, 6], {}) == ["open_complaints", "current_mrr"]
    # Only context reasons: they are the reasons.
    assert pick([2], {}) == ["segment"]
    assert pick([0, 1, 4, 3], {}, top_n=2) == ["complaints_90d", "open_complaints"]


def test_a_comparison_with_typical_needs_the_what_if_to_confirm_it() -> None:
    # Scores are the sum of the features: raising a feature raises the risk.
    model = Fixed(["activity_login_events_30d", "contacts_30d"], [0.4, 0.3])
    frame = pl.DataFrame(
        {
            "customer_id": [1, 2, 3, 4],
            "activity_login_events_30d": [30.0, 2.0, 9.0, 10.0],
            "contacts_30d": [9.0, 9.0, 1.0, None],
        }
    )
    typical = {"activity_login_events_30d": 10.0, "contacts_30d": 1.0}
    out = explain_listed(model, frame, [1, 2, 3, 4], typical=typical)
    assert out.select("customer_id", *CODES[:2]).rows() == [
        # 30 logins against 10: more raises this model's score, so it is a reason.
        (1, "activity_login_events_30d", "contacts_30d"),
        # 2 logins against 10: moving to typical would *raise* the score: no reason.
        (2, "contacts_30d", None),
        # 9 is not far enough from 10; 1 contact is typical.
        (3, None, None),
        (4, None, None),
    ]
    assert out["reason_1"][0] == "30 'login' events in the last 30 days (typical: 10)"
    assert out["reason_2"][0] == "9 contacts with us in the last 30 days (typical: 1)"

    contributions = model.contributions(frame)[:, :-1]
    comparisons = {n: get_feature(n).typical for n in model.features}
    unconfirmed = unconfirmed_comparisons(
        model,
        frame,
        contributions,
        typical,
        {n: c for n, c in comparisons.items() if c is not None},
    )
    assert unconfirmed.tolist() == [[False, False], [True, False], [False, False], [False, False]]


def test_typical_values_ignore_nulls_and_text() -> None:
    frame = pl.DataFrame(
        {"x": [1.0, None, 3.0, 10.0], "y": [None, None, None, None], "s": ["a", "b", "c", "d"]},
        schema={"x": pl.Float64, "y": pl.Float64, "s": pl.String},
    )
    assert typical_values(frame, ["x", "y", "s", "absent"]) == {"x": 3.0}
    assert typical_values(frame.clear(), ["x"]) == {}


def test_candidate_order_is_vectorised_per_row() -> None:
    contributions = np.array([[0.1, 0.3, -0.5, 0.2], [0.0, -0.1, 0.4, 0.4]])
    order, n = candidate_order(contributions, np.array([True, True, True, False]))
    assert n.tolist() == [2, 1]
    assert order[0, :2].tolist() == [1, 0]
    assert order[1, :1].tolist() == [2]
    per_row = np.array([[True, False, True, True], [True, True, True, True]])
    order, n = candidate_order(contributions, per_row)
    assert n.tolist() == [2, 2]
    assert order[0, :2].tolist() == [3, 0]


def test_explaining_unknown_or_repeated_customers_is_an_error(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    with pytest.raises(ValueError, match="1 customer"):
        explain_listed(trained_model, scoring_features, [1, 999_999])
    with pytest.raises(ValueError, match="repeat in 1 row"):
        explain_listed(trained_model, scoring_features, [1, 1])
    empty = explain_listed(trained_model, scoring_features, [])
    assert empty.height == 0 and "reason_3" in empty.columns
