"""Scoring follows the champion's own label kind and horizon, whatever the settings say."""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

from models.nightly import champion_feature_settings, scoring_window, settings_for_champion
from models.prioritise import PrioritySettings
from warehouse.settings import Settings


def champion(**fields: Any) -> Any:
    values: dict[str, Any] = {"label_kind": "subscription", "horizon_days": 30}
    values["feature_settings"] = champion_feature_settings(Settings())
    values.update(fields)
    return SimpleNamespace(version="m-1", **values)


def test_matching_settings_are_kept_as_they_are() -> None:
    settings = Settings()
    used, warnings = settings_for_champion(settings, champion())
    assert used is settings
    assert warnings == []


def test_the_champions_horizon_and_label_kind_win_and_say_so() -> None:
    settings = Settings(horizon_days=30, label_kind="subscription", inactivity_days=120)
    model = SimpleNamespace(
        version="m-9", label_kind="inactivity", horizon_days=60, feature_settings={}
    )
    used, warnings = settings_for_champion(settings, model)  # type: ignore[arg-type]
    assert (used.horizon_days, used.label_kind) == (60, "inactivity")
    assert settings.horizon_days == 30  # the caller's settings are not changed
    assert len(warnings) == 2
    assert "horizon_days=60" in warnings[1] and "m-9" in warnings[1]
    # value at risk over the champion's horizon; the window covers its inactivity population
    assert PrioritySettings.from_settings(used).horizon_days == 60
    window = scoring_window(used, date(2026, 3, 1))
    assert (window.cutoff - window.start).days == 120


def test_the_champions_feature_settings_win_and_a_different_time_zone_is_reported() -> None:
    trained_with = Settings(
        lookback_days=120, inactivity_days=45, public_channels=("tiktok",), timezone="Asia/Tokyo"
    )
    model = champion(feature_settings=champion_feature_settings(trained_with))
    used, warnings = settings_for_champion(Settings(), model)
    assert (used.lookback_days, used.inactivity_days) == (120, 45)
    assert used.public_channels == ("tiktok",)
    assert "tiktok" in used.known_channels  # validated: the public channel stays itself
    assert used.timezone == "UTC"
    assert len(warnings) == 4
    assert "lookback_days=120" in warnings[0]
    assert warnings[-1].startswith("champion m-1 was trained with timezone=Asia/Tokyo")
    # A model registered before feature settings were recorded changes nothing more.
    used, warnings = settings_for_champion(Settings(), champion(feature_settings={}))
    assert warnings == [] and used.lookback_days == Settings().lookback_days
