"""The settings object: sources, identifier validation, password masking."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from warehouse.settings import (
    ConfigFileError,
    Settings,
    describe_settings_error,
    mask_secrets,
    mask_url,
    unknown_environment_settings,
)


def test_defaults_point_at_the_embedded_sqlite_file() -> None:
    settings = Settings()
    assert settings.url == "sqlite:///retention.db"
    assert settings.dialect == "sqlite"
    assert settings.horizon_days == 30
    assert settings.label_kind == "subscription"


def test_environment_overrides_with_nested_table_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_HORIZON_DAYS", "45")
    monkeypatch.setenv("RETENTION_TABLES__INTERACTIONS", "crm_contacts")
    monkeypatch.setenv("RETENTION_SEGMENT_CAPACITY", '{"enterprise": 40}')
    settings = Settings()
    assert settings.horizon_days == 45
    assert settings.tables.interactions == "crm_contacts"
    assert settings.tables.customers == "customers"
    assert settings.segment_capacity == {"enterprise": 40}


def test_toml_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "retention.toml"
    config.write_text(
        'list_capacity = 300\ntimezone = "Europe/Berlin"\n[tables]\nactivity = "events"\n'
    )
    monkeypatch.setenv("RETENTION_CONFIG", str(config))
    monkeypatch.setenv("RETENTION_LIST_CAPACITY", "250")
    settings = Settings()
    assert settings.list_capacity == 250
    assert settings.timezone == "Europe/Berlin"
    assert settings.tables.activity == "events"


def test_missing_config_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RETENTION_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigFileError, match=r"nope\.toml, which does not exist"):
        Settings()
    monkeypatch.setenv("RETENTION_CONFIG", str(tmp_path))
    with pytest.raises(ConfigFileError, match=f"points to {tmp_path}, which is not a file"):
        Settings()


def test_a_config_file_that_is_not_toml_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("list_capacity = [\n")
    monkeypatch.setenv("RETENTION_CONFIG", str(broken))
    with pytest.raises(ConfigFileError, match=r"broken\.toml is not valid TOML"):
        Settings()


@pytest.mark.parametrize(
    "bad",
    ["customers; drop table x", 'a"b', "1abc", "", "x" * 64, "name-with-dash", "sp ace"],
)
def test_table_and_schema_names_must_be_identifiers(bad: str) -> None:
    with pytest.raises(ValidationError, match="not a valid identifier"):
        Settings(tables={"customers": bad})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="not a valid identifier"):
        Settings(source_schema=bad)


def test_unknown_fields_and_time_zones_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(horizon_dayz=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(timezone="Mars/Olympus")


def test_password_never_appears_in_repr_str_or_display() -> None:
    url = "postgresql+psycopg://retention:s3cret-pw@db.internal:5432/crm"
    settings = Settings(warehouse_url=url)  # type: ignore[arg-type]
    assert settings.url == url
    for text in (repr(settings), str(settings), settings.display_url, str(settings.model_dump())):
        assert "s3cret-pw" not in text
    assert settings.display_url == "postgresql+psycopg://retention:***@db.internal:5432/crm"


def test_mask_helpers() -> None:
    assert mask_url("postgresql://u:p@h/db") == "postgresql://u:***@h/db"
    text = "connection to postgresql+psycopg://u:hunter2@h:5432/db failed; password=hunter2"
    masked = mask_secrets(text)
    assert "hunter2" not in masked
    assert "u:***@h:5432" in masked


def test_with_overrides_keeps_the_password_and_validates() -> None:
    settings = Settings(warehouse_url="postgresql://u:pw@h/db")  # type: ignore[arg-type]
    changed = settings.with_overrides(list_capacity=7)
    assert changed.list_capacity == 7
    assert changed.url == "postgresql://u:pw@h/db"
    with pytest.raises(ValidationError):
        settings.with_overrides(list_capacity=-1)


def test_a_misspelt_table_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="interacton"):
        Settings(tables={"interacton": "crm_contacts"})  # type: ignore[arg-type]
    monkeypatch.setenv("RETENTION_TABLES__INTERACTON", "crm_contacts")
    with pytest.raises(ValidationError, match="interacton"):
        Settings()
    monkeypatch.delenv("RETENTION_TABLES__INTERACTON")
    config = tmp_path / "retention.toml"
    config.write_text('[tables]\ncustomer = "people"\n')
    monkeypatch.setenv("RETENTION_CONFIG", str(config))
    with pytest.raises(ValidationError, match="customer"):
        Settings()


def test_a_password_in_the_query_string_is_masked_too() -> None:
    url = "postgresql+psycopg:///crm?host=db.internal&user=retention&password=S3cretQ"
    settings = Settings(warehouse_url=url)  # type: ignore[arg-type]
    for text in (repr(settings), settings.display_url, mask_url(url)):
        assert "S3cretQ" not in text
    assert "password=***" in settings.display_url


def test_an_unencoded_at_sign_in_the_password_is_refused_without_echoing_it() -> None:
    url = "postgresql://postgres:S3cr@tAb@127.0.0.1:5432/crm"
    with pytest.raises(ValidationError, match="more than one '@' before the host") as caught:
        Settings(warehouse_url=url)  # type: ignore[arg-type]
    assert "tAb" not in str(caught.value) and "S3cr" not in str(caught.value)
    encoded = Settings(warehouse_url="postgresql://postgres:S3cr%40tAb@127.0.0.1:5432/crm")  # type: ignore[arg-type]
    assert encoded.display_url == "postgresql://postgres:***@127.0.0.1:5432/crm"


def test_a_misspelt_environment_variable_is_refused_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RETENTION_TIMEZON", "Europe/Berlin")
    monkeypatch.setenv("RETENTION_WAREHOUSE", "postgresql://u@h/db")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = describe_settings_error(caught.value)
    assert "RETENTION_TIMEZON (did you mean RETENTION_TIMEZONE?)" in message
    assert "RETENTION_WAREHOUSE (did you mean RETENTION_WAREHOUSE_URL?)" in message
    assert unknown_environment_settings({"RETENTION_XYZZY": "1"}) == ["RETENTION_XYZZY"]
    # Variables read elsewhere, settings and nested table names are not reported.
    known = {
        "RETENTION_CONFIG": "x.toml",
        "RETENTION_PROJECT_DIR": "/srv",
        "RETENTION_BENCH_POSTGRES_URL": "postgresql://h/db",
        "retention_timezone": "UTC",
        "RETENTION_TABLES__INTERACTIONS": "crm_contacts",
        "PATH": "/bin",
    }
    assert unknown_environment_settings(known) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"segment_capacity": {"enterprise": -1}}, "a segment cap must be 0 or more"),
        (
            {"priority_high_lift": 1.0, "priority_medium_lift": 2.0},
            "priority_medium_lift must be at most priority_high_lift",
        ),
    ],
)
def test_list_settings_that_cannot_work_are_refused_up_front(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)  # type: ignore[arg-type]
