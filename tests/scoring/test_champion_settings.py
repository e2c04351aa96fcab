"""Scoring follows the champion's own label kind and horizon, whatever the settings say."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

from models.nightly import scoring_window, settings_for_champion
from models.prioritise import PrioritySettings
from warehouse.settings import Settings


def champion(**fields: Any) -> Any:
    return SimpleNamespace(version="m-1", label_kind="subscription", horizon_days=30, **fields)


def test_matching_settings_are_kept_as_they_are() -> None:
    settings = Settings()
    used, warnings = settings_for_champion(settings, champion())
    assert used is settings
    assert warnings == []


def test_the_champions_horizon_and_label_kind_win_and_say_so() -> None:
    settings = Settings(horizon_days=30, label_kind="subscription", inactivity_days=120)
    model = SimpleNamespace(version="m-9", label_kind="inactivity", horizon_days=60)
    used, warnings = settings_for_champion(settings, model)  # type: ignore[arg-type]
    assert (used.horizon_days, used.label_kind) == (60, "inactivity")
    assert settings.horizon_days == 30  # the caller's settings are not changed
    assert len(warnings) == 2
    assert "horizon_days=60" in warnings[1] and "m-9" in warnings[1]
    # value at risk over the champion's horizon; the window covers its inactivity population
    assert PrioritySettings.from_settings(used).horizon_days == 60
    window = scoring_window(used, date(2026, 3, 1))
    assert (window.cutoff - window.start).days == 120
