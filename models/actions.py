"""Recommended actions: a rule table keyed on a listed customer's reasons, in order.

The packaged table (``models/default_actions.toml``) maps reasons to actions; the file
named by ``Settings.actions_file`` replaces or extends individual entries without code
changes. Rules live under three keys, from the most specific:

* ``[reasons.<feature>]``: the reason with that code (the feature name);
* ``[topics.<topic>]``: any reason on that topic (``Feature.reason_topic``: e.g. all
  ``complaints_<n>d`` are the topic ``complaints``);
* ``[groups.<group>]``: any reason of a feature in that group;

and ``[default]``. An entry is one rule (a TOML table) or several (an array of tables,
``[[topics.complaints]]``), tried in order. A rule may carry conditions on the customer's
numbers, ``when = { open_complaints = ">= 1", value = "< typical" }``: every condition
must hold (a null or absent value never satisfies one). ``value`` is the reason's own feature value
and ``typical`` tonight's typical (median) value of the feature compared with.

The customer's reasons are taken in order (``reason_1_code`` first). For each, the most
specific entry that exists for it (``reasons``, else ``topics``, else ``groups``) is used
and the first of its rules whose conditions hold gives the action; when none holds, the
next reason is tried. When no reason gives an action (or the customer has no reason),
``[default]`` does.
"""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final

import polars as pl

from features.registry import GROUPS, get_feature, is_reason_topic
from models.reasons import FEATURE_VALUES_COLUMN, TYPICAL_VALUES_COLUMN

FEATURE_GROUPS: tuple[str, ...] = tuple(GROUPS)
"""Feature groups of the feature registry; the keys allowed under ``[groups]``."""

ACTION_CODE_MAX_LENGTH = 64
"""Width of ``retention_list.action_code``."""

DEFAULT_ACTIONS_RESOURCE = "default_actions.toml"

VALUE: Final = "value"
"""Condition key naming the reason's own feature value."""
TYPICAL: Final = "typical"
"""Condition operand naming tonight's typical value of the feature compared."""

_TOP_LEVEL_KEYS = ("default", "groups", "topics", "reasons")
_RULE_KEYS = ("action_code", "text", "when")
_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION: Final = re.compile(
    r"^\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<right>typical|[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


class ActionRulesError(ValueError):
    """An action rule file is malformed; the message names the file and the key."""


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, str | bool):
        return None
    number = float(value)
    return None if math.isnan(number) else number


@dataclass(frozen=True)
class Condition:
    """``<feature> <op> <number | typical>``; ``feature`` may be ``value`` (the reason's own)."""

    feature: str
    op: str
    threshold: float | None
    """None: compare with tonight's typical value of the feature."""

    def __str__(self) -> str:
        right = TYPICAL if self.threshold is None else f"{self.threshold:g}"
        return f"{self.feature} {self.op} {right}"

    def holds(
        self, reason_code: str, values: Mapping[str, Any], typical: Mapping[str, Any]
    ) -> bool:
        """Whether the condition holds for a customer whose reason is ``reason_code``.

        A value that is null or absent from ``values`` (e.g. an event type tonight's model
        does not have) satisfies no condition, nor does a comparison with an unknown
        typical value.
        """
        name = reason_code if self.feature == VALUE else self.feature
        left = _number(values.get(name))
        right = _number(typical.get(name)) if self.threshold is None else self.threshold
        if left is None or right is None:
            return False
        return _OPERATORS[self.op](left, right)


@dataclass(frozen=True)
class ActionRule:
    """One recommended action: a stable code, the instruction in plain words, conditions."""

    action_code: str
    text: str
    when: tuple[Condition, ...] = ()

    def holds(
        self, reason_code: str, values: Mapping[str, Any], typical: Mapping[str, Any]
    ) -> bool:
        """Whether every condition holds (always, without conditions)."""
        return all(c.holds(reason_code, values, typical) for c in self.when)


Rules = tuple[ActionRule, ...]


@dataclass(frozen=True)
class Placement:
    """Where a reason's feature sits in the registry: its group and topic."""

    group: str
    topic: str


PlacementLookup = Callable[[str], Placement | None]


def feature_placement(name: str) -> Placement | None:
    """The registry group and topic of a feature, or None when the registry does not know it."""
    try:
        feature = get_feature(name)
    except (KeyError, LookupError, ValueError):
        return None
    return Placement(group=feature.group, topic=feature.reason_topic)


def feature_group(name: str) -> str | None:
    """The feature registry group of a feature, or None when the registry does not know it."""
    place = feature_placement(name)
    return None if place is None else place.group


@dataclass(frozen=True)
class ActionRules:
    """The rule table: per-reason, per-topic and per-group rule lists, and the default."""

    default: ActionRule
    groups: Mapping[str, Rules] = field(default_factory=dict)
    topics: Mapping[str, Rules] = field(default_factory=dict)
    reasons: Mapping[str, Rules] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def rules_for(self, reason_code: str, place: Placement | None) -> Rules:
        """The rules of the most specific entry for one reason: ``reasons.<code>``, else
        ``topics.<topic>``, else ``groups.<group>``; empty when there is none."""
        if reason_code in self.reasons:
            return self.reasons[reason_code]
        if place is None:
            return ()
        if place.topic in self.topics:
            return self.topics[place.topic]
        return self.groups.get(place.group, ())


def _parse_condition(feature: str, raw: Any, source: str, key: str) -> Condition:
    where = f"{source}: {key}.when.{feature}"
    if not isinstance(raw, str):
        raise ActionRulesError(
            f'{where} must be a string such as ">= 1" or "< typical", got {raw!r}'
        )
    match = _CONDITION.match(raw)
    if match is None:
        raise ActionRulesError(
            f"{where} = {raw!r} is not a condition: use one of <, <=, >, >=, ==, != "
            "followed by a number or 'typical'"
        )
    threshold = None if match["right"] == TYPICAL else float(match["right"])
    if feature != VALUE:
        try:
            registered = get_feature(feature)
        except KeyError:
            raise ActionRulesError(
                f"{where}: {feature!r} is not a feature of the feature registry "
                f"(or '{VALUE}', the reason's own value)"
            ) from None
        if registered.categorical:
            raise ActionRulesError(
                f"{where}: {feature!r} is categorical; conditions compare numbers"
            )
        if threshold is None and registered.typical is None:
            raise ActionRulesError(
                f"{where}: {feature!r} is not compared with a typical value; use a number"
            )
    return Condition(feature=feature, op=match["op"], threshold=threshold)


def _parse_rule(raw: Any, source: str, key: str, *, conditions: bool = True) -> ActionRule:
    if not isinstance(raw, Mapping):
        raise ActionRulesError(f"{source}: [{key}] must be a table with action_code and text")
    allowed = _RULE_KEYS if conditions else _RULE_KEYS[:2]
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ActionRulesError(
            f"{source}: [{key}] has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed)}"
        )
    for name in _RULE_KEYS[:2]:
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ActionRulesError(f"{source}: {key}.{name} must be a non-empty string")
    code = str(raw["action_code"]).strip()
    if len(code) > ACTION_CODE_MAX_LENGTH:
        raise ActionRulesError(
            f"{source}: {key}.action_code is {len(code)} characters long; "
            f"at most {ACTION_CODE_MAX_LENGTH} are allowed"
        )
    when = raw.get("when", {})
    if not isinstance(when, Mapping):
        raise ActionRulesError(
            f'{source}: {key}.when must be a table such as {{ open_complaints = ">= 1" }}'
        )
    parsed = tuple(_parse_condition(str(f), c, source, key) for f, c in when.items())
    return ActionRule(action_code=code, text=str(raw["text"]).strip(), when=parsed)


def _parse_entry(raw: Any, source: str, key: str) -> Rules:
    """One table (one rule) or an array of tables (rules tried in order)."""
    if isinstance(raw, list):
        if not raw:
            raise ActionRulesError(f"{source}: [[{key}]] has no rules")
        return tuple(_parse_rule(r, source, f"{key}[{i}]") for i, r in enumerate(raw))
    return (_parse_rule(raw, source, key),)


def _parse_section(
    document: Mapping[str, Any],
    section: str,
    source: str,
    known: Callable[[str], str | None],
    base: Mapping[str, Rules],
) -> dict[str, Rules]:
    """``base`` with the entries of ``[section]`` replacing or adding; ``known`` says why a
    key is refused (None: accepted)."""
    entries = dict(base)
    raw_section = document.get(section, {})
    if not isinstance(raw_section, Mapping):
        raise ActionRulesError(f"{source}: [{section}] must be a table of rules")
    for key, raw in raw_section.items():
        problem = known(key)
        if problem is not None:
            raise ActionRulesError(f"{source}: {section}.{key} {problem}")
        entries[key] = _parse_entry(raw, source, f"{section}.{key}")
    return entries


def _group_problem(key: str) -> str | None:
    if key in FEATURE_GROUPS:
        return None
    return f"is not a feature group; known groups: {', '.join(FEATURE_GROUPS)}"


def _topic_problem(key: str) -> str | None:
    return None if is_reason_topic(key) else "is not a reason topic of the feature registry"


def _reason_problem(key: str) -> str | None:
    return (
        None if feature_placement(key) is not None else "is not a feature of the feature registry"
    )


def parse_action_rules(
    document: Mapping[str, Any], source: str, base: ActionRules | None = None
) -> ActionRules:
    """Validate a parsed rule document and lay it over ``base`` entry by entry.

    ``source`` names the document in error messages (usually the file path). An entry
    (``groups.X``, ``topics.X``, ``reasons.X``) of the document replaces ``base``'s entry
    of the same key as a whole. Without ``base`` the document must define ``[default]``.
    """
    unknown = sorted(set(document) - set(_TOP_LEVEL_KEYS))
    if unknown:
        raise ActionRulesError(
            f"{source}: unknown top-level key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(_TOP_LEVEL_KEYS)}"
        )
    if "default" in document:
        default = _parse_rule(document["default"], source, "default", conditions=False)
    elif base is not None:
        default = base.default
    else:
        raise ActionRulesError(f"{source}: [default] is missing")
    empty: Mapping[str, Rules] = {}
    return ActionRules(
        default=default,
        groups=_parse_section(
            document, "groups", source, _group_problem, base.groups if base else empty
        ),
        topics=_parse_section(
            document, "topics", source, _topic_problem, base.topics if base else empty
        ),
        reasons=_parse_section(
            document, "reasons", source, _reason_problem, base.reasons if base else empty
        ),
        sources=(*base.sources, source) if base is not None else (source,),
    )


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
    missing, not TOML, or has an unknown key, group, topic, feature or malformed rule.
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


def choose_action(
    rules: ActionRules,
    reason_codes: Sequence[str | None],
    values: Mapping[str, Any] | None = None,
    typical: Mapping[str, Any] | None = None,
    placement: PlacementLookup = feature_placement,
) -> tuple[ActionRule, str | None]:
    """The rule for a customer with these reasons (in order), and the reason that chose it.

    ``values`` are the customer's feature values and ``typical`` tonight's typical values
    (both needed only by rules with conditions). Returns ``(rules.default, None)`` when no
    reason has a rule whose conditions hold.
    """
    values = values or {}
    typical = typical or {}
    for code in reason_codes:
        if code is None:
            continue
        for rule in rules.rules_for(code, placement(code)):
            if rule.holds(code, values, typical):
                return rule, code
    return rules.default, None


def recommend(
    rules: ActionRules,
    reason_codes: str | Sequence[str | None] | None,
    values: Mapping[str, Any] | None = None,
    typical: Mapping[str, Any] | None = None,
    placement: PlacementLookup = feature_placement,
) -> tuple[str, str]:
    """``(action_code, text)`` for a customer with these reasons (a code or codes in order)."""
    codes = (
        [reason_codes] if reason_codes is None or isinstance(reason_codes, str) else reason_codes
    )
    rule, _ = choose_action(rules, codes, values, typical, placement)
    return rule.action_code, rule.text


_REASON_CODE = re.compile(r"^reason_(\d+)_code$")


def recommend_actions(
    rules: ActionRules,
    frame: pl.DataFrame,
    *,
    reason_code_columns: Sequence[str] | None = None,
    placement: PlacementLookup = feature_placement,
) -> pl.DataFrame:
    """``frame`` with ``action_code`` and ``recommended_action`` from each row's reasons.

    ``frame`` is one row per customer with the reason codes (default: every
    ``reason_<k>_code`` column, by ``k``) and the numbers conditions need: the
    ``feature_values`` struct of :func:`models.reasons.explain_listed` or, without it,
    plain columns named after the features; typical values come from its
    ``typical_values`` struct (unknown without it). A Python loop over the rows: meant for
    the listed customers, not the whole population.
    """
    if reason_code_columns is None:
        numbered = [(m, c) for c in frame.columns if (m := _REASON_CODE.match(c))]
        reason_code_columns = [c for m, c in sorted(numbered, key=lambda mc: int(mc[0][1]))]
    absent = [c for c in reason_code_columns if c not in frame.columns]
    if absent or not reason_code_columns:
        raise ValueError(
            "cannot recommend actions: the frame has no reason code column "
            f"{', '.join(repr(c) for c in absent) or 'reason_1_code'}"
        )
    codes = frame.select(pl.col(c).cast(pl.String) for c in reason_code_columns).rows()
    if FEATURE_VALUES_COLUMN in frame.columns:
        values = frame.get_column(FEATURE_VALUES_COLUMN).struct.unnest().to_dicts()
    else:
        values = frame.to_dicts()
    if TYPICAL_VALUES_COLUMN in frame.columns and frame.height:
        typical: dict[str, Any] = frame.get_column(TYPICAL_VALUES_COLUMN)[0] or {}
    else:
        typical = {}
    chosen = [
        choose_action(rules, row_codes, row_values, typical, placement)[0]
        for row_codes, row_values in zip(codes, values, strict=True)
    ]
    return frame.drop("action_code", "recommended_action", strict=False).with_columns(
        pl.Series("action_code", [r.action_code for r in chosen], dtype=pl.String),
        pl.Series("recommended_action", [r.text for r in chosen], dtype=pl.String),
    )
