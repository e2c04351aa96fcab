"""Reasons: features that really push this customer's score up, in plain words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
import pytest

from features.registry import get_feature, render_reason
from models.reasons import candidate_order, explain_listed, reason_columns
from models.train import TrainedModel


def test_reasons_are_positive_top_contributions_with_templates(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    ids = scoring_features["customer_id"].head(150)
    reasons = explain_listed(trained_model, scoring_features, ids, batch_rows=64)
    assert reasons.columns == ["customer_id", "reason_source", *reason_columns(3)]
    assert reasons["customer_id"].to_list() == ids.to_list()
    assert set(reasons["reason_source"]) == {"exact"}

    rows = scoring_features.head(150)
    contributions = trained_model.contributions(rows)[:, :-1]
    names = trained_model.features
    n_with_reason = 0
    for i, (row, explained) in enumerate(
        zip(rows.iter_rows(named=True), reasons.iter_rows(named=True), strict=True)
    ):
        by_name = dict(zip(names, contributions[i], strict=True))
        codes = [explained[f"reason_{k}_code"] for k in (1, 2, 3)]
        given = [c for c in codes if c is not None]
        # Slots fill from the first; every reason has its sentence.
        assert codes[: len(given)] == given
        for k, code in enumerate(codes, start=1):
            assert (code is None) == (explained[f"reason_{k}"] is None)
        # Each reason pushes this customer's score up and has a template that applies.
        for code in given:
            assert by_name[code] > 0
            assert get_feature(code).reason is not None
        assert [explained[f"reason_{k}"] for k in range(1, len(given) + 1)] == [
            render_reason(code, row) for code in given
        ]
        # They are the largest such contributions, in order: nothing better was skipped.
        qualifying = sorted(
            (
                (value, name)
                for name, value in by_name.items()
                if value > 0
                and get_feature(name).reason is not None
                and render_reason(name, row) is not None
            ),
            reverse=True,
        )
        assert given == [name for _, name in qualifying[:3]]
        n_with_reason += bool(given)
    assert n_with_reason > 50
    # Features without a template never become reasons.
    codes_used = set(
        reasons.select(pl.concat_list(f"reason_{k}_code" for k in (1, 2, 3)).explode())
        .to_series()
        .drop_nulls()
    )
    assert not codes_used & {"tenure_days", "segment", "customer_value"}


def test_a_sentence_quotes_the_customers_own_numbers(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    reasons = explain_listed(trained_model, scoring_features, scoring_features["customer_id"])
    complaint = reasons.filter(pl.col("reason_1_code") == "open_complaints").head(1)
    assert complaint.height == 1
    customer = scoring_features.filter(pl.col("customer_id") == complaint["customer_id"][0])
    count = round(customer["open_complaints"][0])
    assert complaint["reason_1"][0].startswith(f"{count} complaint")


def test_an_injected_renderer_and_template_check() -> None:
    class Fixed:
        def __init__(self) -> None:
            self.features = ["a", "b", "c", "d"]

        def contributions(self, frame: pl.DataFrame) -> np.ndarray:
            base = np.array([[0.5, 0.9, -0.2, 0.1, -1.0]])
            return np.repeat(base, frame.height, axis=0)

    def render(name: str, row: Mapping[str, Any]) -> str | None:
        return (
            None if name == "b" and row["customer_id"] == 2 else f"{name} for {row['customer_id']}"
        )

    frame = pl.DataFrame(
        {"customer_id": [1, 2], "a": [1, 1], "b": [1, 1], "c": [1, 1], "d": [1, 1]}
    )
    out = explain_listed(
        Fixed(), frame, [2, 1], top_n=2, has_template=lambda n: n != "d", render=render
    )
    assert out.rows() == [
        (2, "exact", "a", "a for 2", None, None),  # b does not apply, c and d do not qualify
        (1, "exact", "b", "b for 1", "a", "a for 1"),
    ]


def test_candidate_order_is_vectorised_per_row() -> None:
    contributions = np.array([[0.1, 0.3, -0.5, 0.2], [0.0, -0.1, 0.4, 0.4]])
    order, n = candidate_order(contributions, np.array([True, True, True, False]))
    assert n.tolist() == [2, 1]
    assert order[0, :2].tolist() == [1, 0]
    assert order[1, :1].tolist() == [2]


def test_explaining_unknown_or_repeated_customers_is_an_error(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    with pytest.raises(ValueError, match="1 customer"):
        explain_listed(trained_model, scoring_features, [1, 999_999])
    with pytest.raises(ValueError, match="repeat in 1 row"):
        explain_listed(trained_model, scoring_features, [1, 1])
    empty = explain_listed(trained_model, scoring_features, [])
    assert empty.height == 0 and "reason_3" in empty.columns
