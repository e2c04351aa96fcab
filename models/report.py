"""The model report: one self-contained HTML file per training run.

Plots (PNG, embedded as base64, drawn with matplotlib's Agg renderer through
``matplotlib.figure.Figure``, so no global pyplot state): cumulative gains and
lift, calibration curve, expected profit by number contacted, feature importance
by mean absolute SHAP contribution, and the score distribution by label. Tables:
overall metrics for every scorer, per snapshot date and per segment.

:func:`report_markdown` gives the metric tables as Markdown, for a Prefect
artifact published by the flow that trains.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from matplotlib.figure import Figure

from models.evaluate import (
    MODEL,
    EvaluationReport,
    calibration_bins,
    expected_top_k,
    profit_curve,
)
from models.train import LABEL_COLUMN, TrainedModel

FloatArray = npt.NDArray[np.float64]

SHAP_SAMPLE_ROWS = 5000
"""Feature importance uses exact contributions on at most this many holdout rows."""

CURVE_POINTS = 500
"""Curves are drawn through at most this many points."""

OVERALL_METRICS = (
    "n_rows",
    "n_churned",
    "base_rate",
    "mean_probability",
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "top_decile_lift",
    "capacity",
    "precision_at_capacity",
    "recall_at_capacity",
    "expected_profit_at_capacity",
    "best_k",
    "expected_profit_at_best_k",
)
BREAKDOWN_METRICS = (
    "n_rows",
    "base_rate",
    "roc_auc",
    "pr_auc",
    "ece",
    "top_decile_lift",
    "precision_at_capacity",
    "recall_at_capacity",
    "expected_profit_at_best_k",
)
_COUNTS = frozenset({"n_rows", "n_churned", "capacity", "best_k"})
_MONEY = frozenset({"expected_profit_at_capacity", "expected_profit_at_best_k"})


def report_path_for(artifacts_dir: Path, version: str) -> Path:
    """Where a model version's report lives: ``<artifacts>/models/<version>/report.html``."""
    return Path(artifacts_dir) / "models" / version / "report.html"


def _format(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric in _COUNTS:
        return f"{value:,.0f}"
    if metric in _MONEY:
        return f"{value:,.2f}"
    return f"{value:.4f}"


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _curve_points(n: int, points: int = CURVE_POINTS) -> npt.NDArray[np.int64]:
    """At most ``points`` evenly spread counts k in 0..n (always with 0 and n)."""
    return np.unique(np.linspace(0, n, min(points, n + 1)).round().astype(np.int64))


def _labels(holdout: pl.DataFrame) -> FloatArray:
    return np.asarray(holdout.get_column(LABEL_COLUMN).cast(pl.Float64).to_numpy(), np.float64)


def lift_figure(churned: FloatArray, scores: Mapping[str, FloatArray]) -> Figure:
    """Cumulative gains and lift against the share of customers contacted."""
    figure = Figure(layout="constrained", figsize=(10, 4))
    gains_axis, lift_axis = figure.subplots(1, 2)
    n = churned.size
    positives = churned.sum()
    k = _curve_points(n)[1:]
    share = k / n
    for name, score in scores.items():
        captured = expected_top_k(score, churned)[k]
        if positives:
            gains_axis.plot(share, captured / positives, label=name)
            lift_axis.plot(share, (captured / k) / (positives / n), label=name)
    gains_axis.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    gains_axis.set(
        xlabel="share of customers contacted",
        ylabel="share of churners reached",
        title="Cumulative gains",
    )
    lift_axis.axhline(1.0, linestyle=":", color="grey")
    lift_axis.set(xlabel="share of customers contacted", ylabel="lift", title="Lift")
    lift_axis.set_xlim(0.0, 1.0)
    gains_axis.legend(loc="lower right", fontsize="small")
    return figure


def calibration_figure(churned: FloatArray, scores: Mapping[str, FloatArray]) -> Figure:
    """Observed churn rate against mean predicted probability, 10 equal-frequency bins."""
    figure = Figure(layout="constrained", figsize=(5, 5))
    axis = figure.subplots()
    top = 0.0
    for name, score in scores.items():
        bins = calibration_bins(churned, score)
        predicted = [b[0] for b in bins]
        observed = [b[1] for b in bins]
        top = max(top, *predicted, *observed)
        axis.plot(predicted, observed, marker="o", label=name)
    limit = min(1.0, top * 1.05 + 1e-3)
    axis.plot([0, limit], [0, limit], linestyle=":", color="grey", label="perfect")
    axis.set(
        xlabel="mean predicted probability",
        ylabel="observed churn rate",
        title="Calibration (10 equal-frequency bins)",
        xlim=(0, limit),
        ylim=(0, limit),
    )
    axis.legend(loc="upper left", fontsize="small")
    return figure


def profit_figure(
    churned: FloatArray,
    value: FloatArray,
    scores: Mapping[str, FloatArray],
    evaluation: EvaluationReport,
) -> Figure:
    """Expected profit of contacting the top k, for k up to a few times the list capacity."""
    figure = Figure(layout="constrained", figsize=(7, 4))
    axis = figure.subplots()
    curves = {
        name: profit_curve(
            churned,
            score,
            value,
            offer_cost=evaluation.offer_cost,
            success_rate=evaluation.success_rate,
            horizon_months=evaluation.horizon_months,
        )
        for name, score in scores.items()
    }
    pooled = evaluation.capacity_per_snapshot * max(1, len(evaluation.holdout_dates))
    best = max((int(np.argmax(curve)) for curve in curves.values()), default=0)
    shown = min(churned.size, max(4 * pooled, 3 * best, 50))
    k = _curve_points(shown)
    for name, curve in curves.items():
        axis.plot(k, curve[k], label=name)
    axis.axvline(pooled, linestyle="--", color="grey", label="list capacity")
    axis.axhline(0.0, linestyle=":", color="grey")
    axis.set(
        xlabel="customers contacted (top k)",
        ylabel="expected profit",
        title="Expected profit by number contacted",
    )
    axis.legend(loc="lower left", fontsize="small")
    return figure


def shap_importance(
    model: TrainedModel, holdout: pl.DataFrame, *, sample_rows: int, seed: int
) -> dict[str, float]:
    """Mean |SHAP contribution| per feature (log-odds) on a seeded sample of rows, largest first."""
    rows = holdout
    if holdout.height > sample_rows:
        picked = np.sort(
            np.random.default_rng(seed).choice(holdout.height, size=sample_rows, replace=False)
        )
        rows = holdout[picked.tolist()]
    if rows.height == 0:
        return {}
    contributions = model.contributions(rows)[:, : len(model.features)]
    mean_abs = np.abs(contributions).mean(axis=0)
    ranked = sorted(zip(model.features, mean_abs.tolist(), strict=True), key=lambda x: -x[1])
    return dict(ranked)


def importance_figure(importance: Mapping[str, float], top: int = 25) -> Figure:
    """Horizontal bars of mean |SHAP| for the most important features."""
    items = list(importance.items())[:top]
    figure = Figure(layout="constrained", figsize=(7, max(2.5, 0.3 * len(items) + 1)))
    axis = figure.subplots()
    names = [name for name, _ in reversed(items)]
    values = [value for _, value in reversed(items)]
    axis.barh(names, values, color="#4472c4")
    axis.set(
        xlabel="mean |SHAP contribution| (log-odds)",
        title="Feature importance (exact TreeSHAP on holdout rows)",
    )
    return figure


def distribution_figure(churned: FloatArray, probability: FloatArray) -> Figure:
    """Histograms of the model's probability for churners and stayers."""
    figure = Figure(layout="constrained", figsize=(7, 4))
    axis = figure.subplots()
    upper = float(probability.max()) if probability.size else 1.0
    edges = np.linspace(0.0, max(upper, 1e-6), 41)
    for label, name in ((0.0, "stayed"), (1.0, "churned")):
        selected = probability[churned == label]
        if selected.size:
            axis.hist(
                selected,
                bins=edges.tolist(),
                density=True,
                alpha=0.55,
                label=f"{name} ({selected.size:,})",
            )
    axis.set(
        xlabel="calibrated churn probability",
        ylabel="density",
        title="Score distribution by label",
    )
    axis.legend(loc="upper right", fontsize="small")
    return figure


def _metric_table(rows: Sequence[str], table: Mapping[str, Mapping[str, float]]) -> str:
    scorers = list(table)
    head = "".join(f"<th>{html.escape(s)}</th>" for s in scorers)
    body = []
    for metric in rows:
        cells = "".join(f"<td>{_format(metric, table[s].get(metric))}</td>" for s in scorers)
        body.append(f"<tr><th>{html.escape(metric)}</th>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(body)}</table>"


def _breakdown_table(title: str, groups: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    if not groups:
        return ""
    head = "".join(f"<th>{html.escape(m)}</th>" for m in BREAKDOWN_METRICS)
    body = []
    for group, table in groups.items():
        for scorer, metrics in table.items():
            cells = "".join(f"<td>{_format(m, metrics.get(m))}</td>" for m in BREAKDOWN_METRICS)
            body.append(
                f"<tr><th>{html.escape(group)}</th><td>{html.escape(scorer)}</td>{cells}</tr>"
            )
    return (
        f"<h2>{html.escape(title)}</h2><table><tr><th>{html.escape(title.split()[-1])}</th>"
        f"<th>scorer</th>{head}</tr>{''.join(body)}</table>"
    )


def _definition_list(items: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in items.items()
    )
    return f"<table>{rows}</table>"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; }
.note { color: #555; }
.warning { color: #a00; font-weight: bold; }
"""


def write_report(
    path: Path,
    evaluation: EvaluationReport,
    model: TrainedModel,
    holdout: pl.DataFrame,
    scores: Mapping[str, npt.ArrayLike],
    *,
    rank_scores: Mapping[str, npt.ArrayLike] | None = None,
    version: str | None = None,
    decision: str | None = None,
    sample_rows: int = SHAP_SAMPLE_ROWS,
    seed: int = 0,
) -> Path:
    """Write the HTML report and return its path.

    ``holdout`` and ``scores`` are the rows and probabilities ``evaluation`` was
    computed from, and ``rank_scores`` the ranking scores of scorers that rank by
    something else (the rule baseline's raw score);
    :class:`models.evaluate.HoldoutEvaluation` carries all four. Gains, lift and
    profit curves use the ranking scores, the calibration curve the probabilities.
    The evaluation's warnings are shown first. When ``path`` is an existing
    directory the file is ``report.html`` inside it.
    """
    target = Path(path)
    if target.is_dir():
        target = target / "report.html"
    arrays = {name: np.asarray(s, dtype=np.float64).reshape(-1) for name, s in scores.items()}
    rankings = dict(arrays)
    for name, ranking in (rank_scores or {}).items():
        if name in rankings:
            rankings[name] = np.asarray(ranking, dtype=np.float64).reshape(-1)
    churned = _labels(holdout)
    value_column = "customer_value"
    value = (
        holdout.get_column(value_column).cast(pl.Float64).fill_null(0.0).to_numpy()
        if value_column in holdout.columns
        else np.zeros(holdout.height)
    )
    model_scores = arrays[MODEL] if MODEL in arrays else model.predict_proba(holdout)
    importance = shap_importance(model, holdout, sample_rows=sample_rows, seed=seed)
    figures = [
        ("Cumulative gains and lift", lift_figure(churned, rankings)),
        ("Calibration", calibration_figure(churned, arrays)),
        ("Expected profit", profit_figure(churned, value, rankings, evaluation)),
        ("Feature importance", importance_figure(importance)),
        ("Score distribution by label", distribution_figure(churned, model_scores)),
    ]
    title = f"Churn model report: {version}" if version else "Churn model report"
    rows = model.params.get("rows", {})
    summary: dict[str, Any] = {
        "model version": version or "(not registered)",
        "training dates": ", ".join(d.isoformat() for d in model.train_dates),
        "validation dates (early stopping + calibration)": ", ".join(
            d.isoformat() for d in model.validation_dates
        ),
        "holdout dates": ", ".join(d.isoformat() for d in evaluation.holdout_dates),
        "rows (fit / early stopping / calibration / holdout)": " / ".join(
            str(rows.get(k, "?")) for k in ("fit", "early_stopping", "calibration", "holdout")
        ),
        "trees": model.best_iteration,
        "calibration": model.calibrator.method,
        "list capacity per snapshot": evaluation.capacity_per_snapshot,
        "offer cost / success rate / horizon (months)": (
            f"{evaluation.offer_cost:g} / {evaluation.success_rate:g} / "
            f"{evaluation.horizon_months:g}"
        ),
        "features": f"{len(model.features)} ({len(model.categorical)} categorical)",
    }
    if decision:
        summary["promotion decision"] = decision
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if evaluation.warnings:
        parts.append("<h2>Warnings</h2><ul class='warning'>")
        parts.extend(f"<li>{html.escape(w)}</li>" for w in evaluation.warnings)
        parts.append("</ul>")
    parts += [
        _definition_list(summary),
        "<h2>Holdout metrics (same rows for every scorer)</h2>",
        _metric_table(OVERALL_METRICS, evaluation.overall),
    ]
    for caption, figure in figures:
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' "
            f"src='data:image/png;base64,{_png(figure)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append(_breakdown_table("Metrics per snapshot date", evaluation.by_date))
    parts.append(_breakdown_table("Metrics per segment", evaluation.by_segment))
    parts.append("<h2>Feature importance (mean |SHAP|)</h2>")
    parts.append(_definition_list({k: f"{v:.4f}" for k, v in importance.items()}))
    if evaluation.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts.extend(f"<li class='note'>{html.escape(n)}</li>" for n in evaluation.notes)
        parts.append("</ul>")
    parts.append("<h2>Features (in order)</h2>")
    parts.append(
        _definition_list(
            {
                name: "categorical" if name in model.categorical else "numeric"
                for name in model.features
            }
        )
    )
    parts.append("</body></html>")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(parts), encoding="utf-8")
    return target


def report_markdown(
    evaluation: EvaluationReport, *, version: str | None = None, decision: str | None = None
) -> str:
    """The overall and per-segment metric tables as Markdown (for a Prefect artifact)."""
    scorers = evaluation.scorers
    lines = [f"## Churn model {version}" if version else "## Churn model evaluation", ""]
    for warning in evaluation.warnings:
        lines += [f"> **Warning:** {warning}", ""]
    if decision:
        lines += [f"**Promotion:** {decision}", ""]
    lines.append("Holdout dates: " + ", ".join(d.isoformat() for d in evaluation.holdout_dates))
    lines += ["", "| metric | " + " | ".join(scorers) + " |", "|---" * (len(scorers) + 1) + "|"]
    for metric in OVERALL_METRICS:
        cells = " | ".join(_format(metric, evaluation.overall[s].get(metric)) for s in scorers)
        lines.append(f"| {metric} | {cells} |")
    if evaluation.by_segment:
        lines += ["", "### Per segment", ""]
        lines.append("| segment | scorer | " + " | ".join(BREAKDOWN_METRICS) + " |")
        lines.append("|---" * (len(BREAKDOWN_METRICS) + 2) + "|")
        for segment, table in evaluation.by_segment.items():
            for scorer, metrics in table.items():
                cells = " | ".join(_format(m, metrics.get(m)) for m in BREAKDOWN_METRICS)
                lines.append(f"| {segment} | {scorer} | {cells} |")
    return "\n".join(lines) + "\n"
