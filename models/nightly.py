"""The nightly scoring job's stages as plain functions (the Prefect flow wires them).

Each function is one stage: it takes what the previous stage returned and the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from features.build import (
    FeatureConfig,
    build_features,
    check_day_has_begun,
    is_today,
    snapshot_cutoff,
)
from features.quality import feature_quality
from models.actions import load_action_rules
from models.drift import DriftVerdict, judge_drift, population_stability
from models.prioritise import PrioritySettings, cooled_down_customers
from models.registry import RegisteredModel
from models.scoring import ScoredList, build_retention_list
from warehouse.extract import SourceData, extract
from warehouse.schema import Warehouse
from warehouse.settings import Settings
from warehouse.validate import QualityReport, validate


@dataclass(frozen=True)
class ScoringWindow:
    """Which rows the job reads for one as_of date, and from when a row counts as 'future'.

    ``cutoff`` is the snapshot instant (start of ``as_of`` in the configured time zone):
    features see only what happened before it. For today's run nothing is cut off above, so
    rows dated after the moment of the run are read and quarantined as ``after_as_of``
    rather than silently ignored; for a past date (a backfill) the later history is legitimate
    and is not read at all.
    """

    as_of: date
    cutoff: datetime
    start: datetime
    end: datetime | None
    future_after: datetime


def scoring_window(settings: Settings, as_of: date, now: datetime | None = None) -> ScoringWindow:
    """The extraction window for scoring ``as_of``; a day that has not begun is refused.

    The window starts at the cutoff of the day ``history`` days earlier, a local midnight like
    every cutoff the features use (so a daylight-saving change inside the window moves no
    row in or out).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    cutoff = check_day_has_begun(as_of, settings.timezone, now, "scoring")
    history = max(FeatureConfig.from_settings(settings).history_days, settings.cooldown_days)
    start = snapshot_cutoff(as_of - timedelta(days=history), settings.timezone)
    if is_today(as_of, settings.timezone, now):
        # Today: read everything and treat what is later than now as bad data.
        return ScoringWindow(as_of, cutoff, start, None, now)
    # A past day (a backfill): what came after its cutoff is legitimate and not needed.
    return ScoringWindow(as_of, cutoff, start, cutoff, cutoff)


FEATURE_SETTINGS: tuple[str, ...] = ("lookback_days", "inactivity_days", "public_channels")
"""Settings that change what a model's features and population mean: scoring uses the
champion's own. (The time zone is recorded too, but day boundaries follow the settings.)"""


def champion_feature_settings(settings: Settings) -> dict[str, Any]:
    """What a model records at registration of the settings that shaped its features."""
    recorded: dict[str, Any] = {name: getattr(settings, name) for name in FEATURE_SETTINGS}
    recorded["public_channels"] = list(settings.public_channels)
    recorded["timezone"] = settings.timezone
    return recorded


def champion_settings(model: RegisteredModel) -> dict[str, Any]:
    """The settings that define what ``model`` predicts, as it was trained: label kind,
    horizon and the :data:`FEATURE_SETTINGS` it recorded (typed as in :class:`Settings`)."""
    wanted: dict[str, Any] = {"label_kind": model.label_kind, "horizon_days": model.horizon_days}
    for name in FEATURE_SETTINGS:
        if name in model.feature_settings:
            value = model.feature_settings[name]
            wanted[name] = tuple(value) if name == "public_channels" else int(value)
    return wanted


def settings_for_champion(settings: Settings, model: RegisteredModel) -> tuple[Settings, list[str]]:
    """The settings to score with ``model``: its own label kind, horizon and feature settings.

    The champion's probability means "churns within *its* horizon, by *its* label kind", so
    the population and the value at risk follow the model, not the configuration; so do the
    lookback, the inactivity period and the public channels its features were built with
    (for a model that recorded them). Returns the settings and one warning per setting
    that differed from the model's; a different time zone is only reported.
    """
    changes: dict[str, Any] = {}
    warnings: list[str] = []
    for name, value in champion_settings(model).items():
        configured = getattr(settings, name)
        if configured != value:
            changes[name] = value
            warnings.append(
                f"champion {model.version} was trained with {name}={value} but the settings "
                f"say {configured}; scoring uses the champion's {value}"
            )
    zone = model.feature_settings.get("timezone")
    if zone is not None and zone != settings.timezone:
        warnings.append(
            f"champion {model.version} was trained with timezone={zone} but the settings say "
            f"{settings.timezone}; days start at midnight in {settings.timezone}"
        )
    if not changes:
        return settings, warnings
    return settings.with_overrides(**changes), warnings


def extract_sources(engine: sa.Engine, wh: Warehouse, window: ScoringWindow) -> SourceData:
    """Read the source rows the job needs for the window."""
    return extract(engine, wh, window_start=window.start, window_end=window.end)


def validate_sources(
    settings: Settings, data: SourceData, window: ScoringWindow
) -> tuple[SourceData, QualityReport]:
    """Quarantine and normalise bad rows; count every rule."""
    return validate(data, as_of=window.future_after, known_channels=settings.known_channels)


class NoActiveCustomersError(ValueError):
    """Nobody is active at the snapshot: there is no one to score, so no list is written."""


def scoring_features(
    settings: Settings, sources: SourceData, model: RegisteredModel, as_of: date
) -> pl.DataFrame:
    """Features of every active customer at ``as_of``, with the champion's event types.

    Raises :class:`NoActiveCustomersError` when nobody is active, naming what was read.
    """
    config = FeatureConfig.from_settings(settings)
    frame = build_features(sources.lazy(), [as_of], config, model.event_types).collect()
    if frame.height == 0:
        if settings.label_kind == "subscription":
            rule = "a subscription covering the start of that day"
        else:
            rule = f"activity in the {settings.inactivity_days} days before it"
        counts = ", ".join(f"{name} {rows:,}" for name, rows in sources.row_counts().items())
        raise NoActiveCustomersError(
            f"nobody is active as of {as_of} ({settings.label_kind}: {rule}); "
            f"rows read after validation: {counts}"
        )
    return frame


def feature_report(model: RegisteredModel, features: pl.DataFrame) -> dict[str, Any]:
    """Data quality of tonight's features: null rates and ranges per feature, rows per
    snapshot (:func:`features.quality.feature_quality`), and per categorical feature the rows
    whose value the champion never saw in training (scored as missing)."""
    report = feature_quality(features)
    report["unseen_categories"] = model.model.encoding.unseen_categories(features)
    return report


def score_and_list(
    settings: Settings,
    model: RegisteredModel,
    features: pl.DataFrame,
    sources: SourceData,
    window: ScoringWindow,
    run_id: str,
) -> ScoredList:
    """Score, prioritise (with the contact cool-down), explain and recommend actions."""
    config = PrioritySettings.from_settings(settings)
    cooled = cooled_down_customers(
        sources.retention_contacts,
        window.cutoff,
        settings.cooldown_days,
        timezone=settings.timezone,
    )
    return build_retention_list(
        model.model,
        features,
        cooled,
        config=config,
        rules=load_action_rules(settings.actions_file),
        as_of=window.as_of,
        model_version=model.version,
        run_id=run_id,
    )


DRIFT_WATCH = 5
"""The champion's most important features (by gain) whose drift alone can stop a run."""


def check_drift(
    settings: Settings, model: RegisteredModel, features: pl.DataFrame, scored: ScoredList
) -> DriftVerdict | None:
    """Population stability of tonight's features and scores against the champion's reference.

    None when the champion was registered without a reference profile.
    """
    profile = model.training_reference
    if not profile:
        return None
    scores = features.select("customer_id").join(
        scored.rows.select("customer_id", "churn_probability"), on="customer_id", how="left"
    )["churn_probability"]
    psi = population_stability(profile, features, scores.to_numpy())
    gains = model.model.booster.feature_importance(importance_type="gain")
    ranked = sorted(zip(model.features, gains, strict=True), key=lambda item: -float(item[1]))
    watch = [name for name, gain in ranked[:DRIFT_WATCH] if gain > 0]
    return judge_drift(psi, warn=settings.drift_warn_psi, stop=settings.drift_stop_psi, watch=watch)
