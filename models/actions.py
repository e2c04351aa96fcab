"""Recommended actions: a rule table keyed on a listed customer's top reason.

The packaged table (``models/default_actions.toml``) maps reason codes (feature names)
and feature groups to an action; the file named by ``Settings.actions_file`` replaces or
extends individual rules without code changes. Lookup order for a reason code: the
exact reason, then the feature's group (from the feature registry), then the default.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from features.registry import GROUPS, get_feature

FEATURE_GROUPS: tuple[str, ...] = tuple(GROUPS)
"""Feature groups of the feature registry; the keys allowed under ``[groups]``."""

ACTION_CODE_MAX_LENGTH = 64
"""Width of ``retention_list.action_code``."""

DEFAULT_ACTIONS_RESOURCE = "default_actions.toml"

_TOP_LEVEL_KEYS = ("default", "groups", "reasons")
_RULE_KEYS = ("action_code", "text")


class ActionRulesError(ValueError):
    """An action rule file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class ActionRule:
    """One recommended action: a stable code and the instruction in plain words."""

    action_code: str
    text: str


@dataclass(frozen=True)
class ActionRules:
    """The rule table: exact reasons first, then feature groups, then the default."""

    default: ActionRule
    groups: Mapping[str, ActionRule] = field(default_factory=dict)
    reasons: Mapping[str, ActionRule] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def rule_for(self, reason_code: str | None, group: str | None) -> ActionRule:
        """The rule for a reason code whose feature belongs to ``group``."""
        if reason_code is not None and reason_code in self.reasons:
            return self.reasons[reason_code]
        if group is not None and group in self.groups:
            return self.groups[group]
        return self.default


def _parse_rule(raw: Any, source: str, key: str) -> ActionRule:
    if not isinstance(raw, Mapping):
        raise ActionRulesError(f"{source}: [{key}] must be a table with action_code and text")
    unknown = sorted(set(raw) - set(_RULE_KEYS))
    if unknown:
        raise ActionRulesError(
            f"{source}: [{key}] has unknown key(s) {', '.join(unknown)}; allowed: action_code, text"
        )
    for name in _RULE_KEYS:
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ActionRulesError(f"{source}: {key}.{name} must be a non-empty string")
    code = str(raw["action_code"]).strip()
    if len(code) > ACTION_CODE_MAX_LENGTH:
        raise ActionRulesError(
            f"{source}: {key}.action_code is {len(code)} characters long; "
            f"at most {ACTION_CODE_MAX_LENGTH} are allowed"
        )
    return ActionRule(action_code=code, text=str(raw["text"]).strip())


def parse_action_rules(
    document: Mapping[str, Any], source: str, base: ActionRules | None = None
) -> ActionRules:
    """Validate a parsed rule document and lay it over ``base`` (rule by rule).

    ``source`` names the document in error messages (usually the file path).
    Without ``base`` the document must define ``[default]``.
    """
    unknown = sorted(set(document) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise ActionRulesError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
            "allowed: default, groups, reasons"
        )
    if "default" in document:
        default = _parse_rule(document["default"], source, "default")
    elif base is not None:
        default = base.default
    else:
        raise ActionRulesError(f"{source}: [default] is missing")

    groups = dict(base.groups) if base is not None else {}
    raw_groups = document.get("groups", {})
    if not isinstance(raw_groups, Mapping):
        raise ActionRulesError(f"{source}: [groups] must be a table of rules")
    for group, raw in raw_groups.items():
        if group not in FEATURE_GROUPS:
            raise ActionRulesError(
                f"{source}: groups.{group} is not a feature group; "
                f"known groups: {', '.join(FEATURE_GROUPS)}"
            )
        groups[group] = _parse_rule(raw, source, f"groups.{group}")

    reasons = dict(base.reasons) if base is not None else {}
    raw_reasons = document.get("reasons", {})
    if not isinstance(raw_reasons, Mapping):
        raise ActionRulesError(f"{source}: [reasons] must be a table of rules")
    for reason, raw in raw_reasons.items():
        if feature_group(reason) is None:
            raise ActionRulesError(
                f"{source}: reasons.{reason} is not a feature of the feature registry"
            )
        reasons[reason] = _parse_rule(raw, source, f"reasons.{reason}")

    sources = (*base.sources, source) if base is not None else (source,)
    return ActionRules(default=default, groups=groups, reasons=reasons, sources=sources)


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ActionRulesError(f"{source}: not valid TOML: {exc}") from exc


def default_action_rules() -> ActionRules:
    """The packaged rule table."""
    resource = resources.files("models").joinpath(DEFAULT_ACTIONS_RESOURCE)
    source = f"models/{DEFAULT_ACTIONS_RESOURCE}"
    return parse_action_rules(_read_toml(resource.read_text(encoding="utf-8"), source), source)


def load_action_rules(path: Path | None) -> ActionRules:
    """The packaged rules, overridden and extended by the TOML file at ``path`` if given.

    Raises :class:`ActionRulesError` naming the file and the key when the file is
    missing, not TOML, or has an unknown key, group or malformed rule.
    """
    rules = default_action_rules()
    if path is None:
        return rules
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ActionRulesError(f"{source}: cannot read the action rules file: {exc}") from exc
    return parse_action_rules(_read_toml(text, source), source, base=rules)


def feature_group(name: str) -> str | None:
    """The feature registry group of a feature, or None when the registry does not know it."""
    try:
        return get_feature(name).group
    except (KeyError, LookupError, ValueError):
        return None


GroupLookup = Callable[[str], str | None]


def recommend(
    rules: ActionRules, reason_code: str | None, group_of: GroupLookup = feature_group
) -> tuple[str, str]:
    """``(action_code, text)`` for a customer whose top reason is ``reason_code``."""
    group = group_of(reason_code) if reason_code is not None else None
    rule = rules.rule_for(reason_code, group)
    return rule.action_code, rule.text


def recommend_actions(
    rules: ActionRules,
    frame: pl.DataFrame,
    *,
    reason_column: str = "reason_1_code",
    group_of: GroupLookup = feature_group,
) -> pl.DataFrame:
    """``frame`` with ``action_code`` and ``recommended_action`` from its top reason.

    Rules are resolved once per distinct reason code, then joined onto the rows.
    """
    if reason_column not in frame.columns:
        raise ValueError(f"cannot recommend actions: the frame has no column {reason_column!r}")
    codes: list[str | None] = frame.get_column(reason_column).cast(pl.String).unique().to_list()
    resolved = [(code, *recommend(rules, code, group_of)) for code in codes]
    table = pl.DataFrame(
        resolved,
        schema={
            reason_column: pl.String(),
            "action_code": pl.String(),
            "recommended_action": pl.String(),
        },
        orient="row",
    )
    return (
        frame.drop("action_code", "recommended_action", strict=False)
        .with_columns(pl.col(reason_column).cast(pl.String))
        .join(table, on=reason_column, how="left", nulls_equal=True, maintain_order="left")
    )
