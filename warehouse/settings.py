"""The one typed settings object, built at the entry point and passed down.

Values come, highest priority first, from keyword arguments, ``RETENTION_*``
environment variables (nested fields with ``__``, e.g.
``RETENTION_TABLES__INTERACTIONS=crm_contacts``), a TOML file (the path in
``RETENTION_CONFIG``, else ``retention.toml`` in the working directory when it
exists), then the defaults below.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
"""Configured table and schema names must match this; they are also quoted in SQL."""

DEFAULT_WAREHOUSE_URL = "sqlite:///retention.db"
DEFAULT_CHANNELS = (
    "phone",
    "email",
    "chat",
    "twitter",
    "facebook",
    "instagram",
    "store",
    "web",
    "whatsapp",
    "sms",
)
PUBLIC_CHANNELS = ("twitter", "facebook", "instagram")


class ConfigFileError(ValueError):
    """The configuration file is missing (where RETENTION_CONFIG points) or not valid TOML."""


def validate_identifier(value: str, what: str = "identifier") -> str:
    """Return ``value`` when it is a plain SQL identifier, else raise ``ValueError``."""
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid identifier: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    return value


def mask_url(url: str) -> str:
    """The warehouse URL with any password replaced by ``***``."""
    try:
        rendered = make_url(url).render_as_string(hide_password=True)
    except Exception:
        rendered = re.sub(r"://[^/?#]*@", "://***@", url)
    # A password may also sit in the query string (``?password=...``).
    return mask_secrets(rendered)


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):(?P<password>[^@\s]*)@")
_KEYWORD_PASSWORD = re.compile(r"(?i)(?P<head>\bpassword\s*[=:]\s*)(?P<password>[^\s'\",;&]+)")


def mask_secrets(text: str) -> str:
    """``text`` with passwords in URLs (``scheme://user:pw@``) and ``password=...`` masked."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


ENV_PREFIX = "RETENTION_"
ENV_NESTED_DELIMITER = "__"


def setting_sources(path: Sequence[str | int]) -> str:
    """A setting as an error names it: dotted name, environment variable and TOML key.

    ``("tables", "interactions")`` reads ``tables.interactions (RETENTION_TABLES__INTERACTIONS,
    or interactions under [tables] in the TOML file)``.
    """
    parts = [str(part) for part in path]
    env = ENV_PREFIX + ENV_NESTED_DELIMITER.join(part.upper() for part in parts)
    toml = f"{parts[-1]} under [{'.'.join(parts[:-1])}]" if len(parts) > 1 else parts[0]
    return f"{'.'.join(parts)} ({env}, or {toml} in the TOML file)"


def describe_settings_error(exc: ValidationError) -> str:
    """A :class:`Settings` validation error in one line, passwords masked.

    Each problem names the setting with :func:`setting_sources` and the rule it breaks; the
    offending values are left out (one may be a secret).
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        location = error["loc"]
        problems.append(f"{setting_sources(location)}: {message}" if location else message)
    return mask_secrets("; ".join(problems))


class TableNames(BaseModel):
    """Names of the warehouse tables; each is validated as a plain identifier.

    An unknown key (a misspelt table) is refused rather than silently ignored.
    """

    model_config = ConfigDict(extra="forbid")

    customers: str = "customers"
    subscriptions: str = "subscriptions"
    interactions: str = "interactions"
    activity: str = "activity"
    retention_contacts: str = "retention_contacts"
    retention_list: str = "retention_list"
    scoring_runs: str = "scoring_runs"
    model_registry: str = "model_registry"
    schema_version: str = "retention_schema_version"

    @field_validator("*")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return validate_identifier(value, "table name")


NOT_SETTINGS: Final = frozenset(
    {"RETENTION_CONFIG", "RETENTION_PROJECT_DIR", "RETENTION_BENCH_POSTGRES_URL"}
)
"""``RETENTION_*`` environment variables that are read elsewhere, not settings."""

NOT_SETTINGS_PREFIXES: Final = ("RETENTION_TEST", "RETENTION_REQUIRE_")
"""Prefixes of the test suite's own ``RETENTION_*`` variables."""


def unknown_environment_settings(environ: Mapping[str, str]) -> list[str]:
    """``RETENTION_*`` variables that name no setting (a misspelt one would otherwise be
    ignored and its default used), each with the closest setting's variable when any."""
    variables = [ENV_PREFIX + name.upper() for name in Settings.model_fields]
    unknown = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        if upper.startswith(NOT_SETTINGS_PREFIXES):
            continue
        head = upper.split(ENV_NESTED_DELIMITER, 1)[0]  # tables.x is RETENTION_TABLES__X
        if head in variables:
            continue
        close = difflib.get_close_matches(head, variables, n=1, cutoff=0.8)
        unknown.append(f"{key} (did you mean {close[0]}?)" if close else key)
    return unknown


class Settings(BaseSettings):
    """Everything the job needs to know, validated once."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
        # A value in an error may be a secret (the URL); messages name the setting instead.
        hide_input_in_errors=True,
    )

    warehouse_url: SecretStr = Field(
        default=SecretStr(DEFAULT_WAREHOUSE_URL),
        description="SQLAlchemy URL of the warehouse; a password in it is never printed.",
    )
    source_schema: str | None = Field(
        default=None, description="Database schema holding the source tables (None: default)."
    )
    output_schema: str | None = Field(
        default=None, description="Database schema for the output tables (None: default)."
    )
    tables: TableNames = Field(default_factory=TableNames)

    timezone: str = Field(default="UTC", description="Time zone that defines 'today'.")
    horizon_days: int = Field(default=30, ge=1, le=365, description="Churn horizon H in days.")
    snapshot_spacing_days: int = Field(
        default=30, ge=1, le=365, description="Days between training snapshots."
    )
    n_snapshots: int = Field(
        default=12, ge=4, le=120, description="Training snapshots: 2 holdout, 1 validation, 1+ fit."
    )
    lookback_days: int = Field(
        default=90, ge=90, le=3650, description="Longest feature window; older rows are not read."
    )
    label_kind: Literal["subscription", "inactivity"] = "subscription"
    inactivity_days: int = Field(
        default=30, ge=1, le=365, description="Inactivity label: active means activity in N days."
    )
    max_event_types: int = Field(
        default=12, ge=0, le=200, description="Cap on activity event types that become features."
    )
    known_channels: tuple[str, ...] = DEFAULT_CHANNELS
    public_channels: tuple[str, ...] = PUBLIC_CHANNELS

    list_capacity: int = Field(default=500, ge=0, description="Customers listed per day.")
    segment_capacity: dict[str, int] = Field(
        default_factory=dict, description="Optional per-segment caps on listed customers."
    )
    rank_by: Literal["value_at_risk", "probability"] = "value_at_risk"
    cooldown_days: int = Field(
        default=14, ge=0, description="Skip customers contacted within this many days."
    )
    priority_high_lift: float = Field(
        default=3.0,
        gt=0,
        description="Priority high: churn probability at least this many times the mean.",
    )
    priority_medium_lift: float = Field(
        default=1.5,
        gt=0,
        description="Priority medium: churn probability at least this many times the mean.",
    )
    actions_file: Path | None = Field(
        default=None, description="TOML file overriding the reason -> action rule table."
    )

    offer_cost: float = Field(default=10.0, ge=0, description="Cost of one retention contact.")
    offer_success_rate: float = Field(
        default=0.3, ge=0, le=1, description="Share of contacted churners who stay."
    )
    promotion_metric: Literal["pr_auc", "roc_auc"] = "pr_auc"
    promotion_margin: float = Field(
        default=0.005, ge=0, description="How much a challenger must beat the champion by."
    )
    seed: int = 20261122

    db_retries: int = Field(
        default=3, ge=0, le=10, description="Retries of a database stage after a transient error."
    )
    db_retry_delay_seconds: float = Field(
        default=5.0, ge=0, description="First retry delay; each later one doubles."
    )

    drift_warn_psi: float = Field(default=0.1, ge=0)
    drift_stop_psi: float = Field(default=0.5, ge=0)

    artifacts_dir: Path = Field(
        default=Path("artifacts"), description="Where model reports are written."
    )

    @field_validator("source_schema", "output_schema")
    @classmethod
    def _schema_identifier(cls, value: str | None) -> str | None:
        return None if value is None else validate_identifier(value, "schema name")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except Exception as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("known_channels", "public_channels")
    @classmethod
    def _channel_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Channels as the data is compared with them: trimmed, lower-case, each once."""
        names = [name.strip().lower() for name in value]
        if any(not name for name in names):
            raise ValueError("a channel name is empty")
        return tuple(dict.fromkeys(names))

    @field_validator("warehouse_url")
    @classmethod
    def _parsable_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        authority = text.partition("://")[2].split("/", 1)[0]
        if authority.count("@") > 1:
            raise ValueError(
                "the warehouse URL has more than one '@' before the host: URL-encode special "
                "characters in the user name and password ('@' as %40, ':' as %3A, '/' as %2F)"
            )
        try:
            make_url(text)
        except Exception as exc:
            raise ValueError(f"warehouse URL {mask_url(text)!r} is not a SQLAlchemy URL") from exc
        return value

    @model_validator(mode="after")
    def _thresholds(self) -> Settings:
        if self.drift_stop_psi < self.drift_warn_psi:
            raise ValueError("drift_stop_psi must be at least drift_warn_psi")
        if self.priority_medium_lift > self.priority_high_lift:
            raise ValueError("priority_medium_lift must be at most priority_high_lift")
        return self

    @field_validator("segment_capacity")
    @classmethod
    def _caps_not_negative(cls, value: dict[str, int]) -> dict[str, int]:
        negative = [f"{segment!r}: {cap}" for segment, cap in value.items() if cap < 0]
        if negative:
            raise ValueError(f"a segment cap must be 0 or more, got {', '.join(negative)}")
        return value

    @model_validator(mode="after")
    def _no_unknown_environment_settings(self) -> Settings:
        unknown = unknown_environment_settings(os.environ)
        if unknown:
            raise ValueError(
                f"the environment sets {', '.join(unknown)}, which no setting reads; fix or "
                "unset it (README, Configuration, lists the settings)"
            )
        return self

    @model_validator(mode="after")
    def _public_channels_are_known(self) -> Settings:
        # Validation turns unknown channels into "other": a public channel must stay itself.
        missing = [c for c in self.public_channels if c not in self.known_channels]
        if missing:
            self.known_channels = (*self.known_channels, *missing)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = os.environ.get("RETENTION_CONFIG")
        toml_path = Path(config) if config else Path("retention.toml")
        if config and not toml_path.is_file():
            what = "is not a file" if toml_path.exists() else "does not exist"
            raise ConfigFileError(f"RETENTION_CONFIG points to {toml_path}, which {what}")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            try:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
            except tomllib.TOMLDecodeError as exc:
                raise ConfigFileError(f"{toml_path} is not valid TOML: {exc}") from None
        return tuple(sources)

    # -- conveniences -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The warehouse URL with its password: pass it to drivers, never to logs."""
        return self.warehouse_url.get_secret_value()

    @property
    def display_url(self) -> str:
        """The warehouse URL with its password masked, safe to print."""
        return mask_url(self.url)

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    def with_overrides(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed."""
        data = self.model_dump()
        data["warehouse_url"] = self.url
        data.update(changes)
        return type(self)(**data)

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield (key, self.display_url if key == "warehouse_url" else value)
