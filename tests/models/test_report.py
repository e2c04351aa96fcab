"""The model report: a self-contained HTML file with the plots and metric tables."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from models import report as report_module
from models.evaluate import MODEL, RULE_BASELINE, EvaluationReport, HoldoutEvaluation
from models.report import report_markdown, report_path_for, shap_importance, write_report
from models.train import TrainedModel


def test_report_has_plots_and_tables(
    tmp_path: Path, trained: TrainedModel, evaluated_with_champion: HoldoutEvaluation
) -> None:
    result = evaluated_with_champion
    target = report_path_for(tmp_path / "artifacts", "m-test")
    written = write_report(
        target,
        result.report,
        trained,
        result.holdout,
        result.scores,
        version="m-test",
        decision="promoted: test",
    )
    assert written == tmp_path / "artifacts" / "models" / "m-test" / "report.html"
    html = written.read_text(encoding="utf-8")
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 5
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    for caption in (
        "Cumulative gains and lift",
        "Calibration",
        "Expected profit",
        "Feature importance",
        "Score distribution by label",
    ):
        assert f"<figcaption>{caption}</figcaption>" in html
    for text in (
        "m-test",
        "promoted: test",
        "Metrics per segment",
        "enterprise",
        "Metrics per snapshot date",
        "rule_baseline",
        "champion",
        "pr_auc",
        "expected_profit_at_best_k",
    ):
        assert text in html
    assert "<script" not in html and "http" not in html


def test_report_into_a_directory_and_markdown(
    tmp_path: Path, trained: TrainedModel, evaluated: HoldoutEvaluation
) -> None:
    result = evaluated
    written = write_report(tmp_path, result.report, trained, result.holdout, result.scores)
    assert written == tmp_path / "report.html"
    markdown = report_markdown(result.report, version="m-x", decision="refused: test")
    assert markdown.startswith("## Churn model m-x")
    assert "| metric | model | model_uncalibrated | rule_baseline |" in markdown
    assert "| pr_auc |" in markdown and "### Per segment" in markdown


def test_shap_importance_uses_a_bounded_sample(
    labelled: pl.DataFrame, trained: TrainedModel
) -> None:
    importance = shap_importance(trained, labelled, sample_rows=300, seed=1)
    assert list(importance) and set(importance) == set(trained.features)
    values = list(importance.values())
    assert values == sorted(values, reverse=True)
    planted = ("open_complaints", "unanswered_contacts_30d", "days_since_last_activity")
    assert importance["noise"] < min(importance[name] for name in planted)
    assert importance == shap_importance(trained, labelled, sample_rows=300, seed=1)


def test_report_ranks_the_rule_by_its_score_and_shows_warnings_first(
    tmp_path: Path,
    trained: TrainedModel,
    evaluated: HoldoutEvaluation,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = evaluated
    drawn: dict[str, dict[str, np.ndarray]] = {}

    def spy(name: str, draw: Callable[..., Figure]) -> Callable[..., Figure]:
        def wrapped(churned: np.ndarray, *args: Any) -> Figure:
            scores = next(a for a in args if isinstance(a, dict))
            drawn[name] = dict(scores)
            return draw(churned, *args)

        return wrapped

    for name in ("lift_figure", "calibration_figure", "profit_figure"):
        monkeypatch.setattr(f"models.report.{name}", spy(name, getattr(report_module, name)))
    warning = "the champion m-old was trained on this holdout's period"
    report = dataclasses.replace(result.report, warnings=[warning])
    written = write_report(
        tmp_path,
        report,
        trained,
        result.holdout,
        result.scores,
        rank_scores=result.rank_scores,
    )
    rule_score = result.rank_scores[RULE_BASELINE]
    for name in ("lift_figure", "profit_figure"):
        np.testing.assert_array_equal(drawn[name][RULE_BASELINE], rule_score)
        np.testing.assert_array_equal(drawn[name][MODEL], result.scores[MODEL])
    np.testing.assert_array_equal(
        drawn["calibration_figure"][RULE_BASELINE], result.scores[RULE_BASELINE]
    )
    html = written.read_text(encoding="utf-8")
    assert "<h2>Warnings</h2>" in html
    assert html.index("m-old was trained") < html.index("Holdout metrics")
    markdown = report_markdown(report)
    assert f"> **Warning:** {warning}" in markdown
    restored = EvaluationReport.from_dict(report.to_dict())
    assert restored.warnings == [warning]
