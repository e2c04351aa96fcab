"""The reason -> action rule table: packaged defaults, overrides from a TOML file, errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from models.actions import (
    ActionRulesError,
    default_action_rules,
    load_action_rules,
    recommend,
    recommend_actions,
)


def test_default_rules_follow_the_issue() -> None:
    rules = load_action_rules(None)
    assert recommend(rules, "open_complaints")[0] == "resolve_and_call_back"
    assert recommend(rules, "public_complaints_unanswered_30d")[0] == (
        "answer_publicly_then_privately"
    )
    assert recommend(rules, "transfers_per_contact_30d")[0] == "assign_one_owner"
    assert recommend(rules, "activity_trend_30d")[0] == "re_engagement_offer"
    # Exact reason rules win over the group; generated event-type features have a group.
    assert recommend(rules, "reopened_complaints_30d")[0] == "escalate_reopened_complaint"
    assert recommend(rules, "activity_login_events_30d")[0] == "re_engagement_offer"
    # No reason, or a code the registry does not know: the default.
    assert recommend(rules, None) == (rules.default.action_code, rules.default.text)
    assert recommend(rules, "no_such_feature")[0] == "personal_check_in"


def test_override_file_replaces_and_extends(tmp_path: Path) -> None:
    path = tmp_path / "actions.toml"
    path.write_text(
        """
[groups.effort]
action_code = "senior_owner"
text = "A senior agent takes the case."

[reasons.open_complaints]
action_code = "ceo_call"
text = "The head of service calls today."
""",
        encoding="utf-8",
    )
    rules = load_action_rules(path)
    assert recommend(rules, "contacts_30d") == ("senior_owner", "A senior agent takes the case.")
    assert recommend(rules, "open_complaints")[0] == "ceo_call"
    assert recommend(rules, "complaints_30d")[0] == "resolve_and_call_back"  # default kept
    assert rules.sources == ("models/default_actions.toml", str(path))
    assert default_action_rules().groups["effort"].action_code == "assign_one_owner"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[oops]\nx = 1\n", "unknown top-level key"),
        ("[groups.loyalty]\naction_code='a'\ntext='b'\n", "groups.loyalty is not a feature group"),
        ("[reasons.no_such]\naction_code='a'\ntext='b'\n", "reasons.no_such is not a feature"),
        ("[default]\naction_code='a'\n", "default.text must be a non-empty string"),
        ("[default]\naction_code='a'\ntext='b'\ncolour='red'\n", r"\[default\] has unknown key"),
        ("[default]\naction_code='" + "x" * 65 + "'\ntext='b'\n", "at most 64"),
        ("[default\n", "not valid TOML"),
    ],
)
def test_invalid_files_name_the_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ActionRulesError, match=message) as info:
        load_action_rules(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ActionRulesError, match="cannot read"):
        load_action_rules(tmp_path / "absent.toml")


def test_recommend_actions_over_a_frame() -> None:
    rules = load_action_rules(None)
    frame = pl.DataFrame(
        {
            "customer_id": [3, 1, 2, 4],
            "reason_1_code": ["open_complaints", None, "contacts_30d", "open_complaints"],
        }
    )
    out = recommend_actions(rules, frame)
    assert out["customer_id"].to_list() == [3, 1, 2, 4]
    assert out["action_code"].to_list() == [
        "resolve_and_call_back",
        "personal_check_in",
        "assign_one_owner",
        "resolve_and_call_back",
    ]
    assert out["recommended_action"].null_count() == 0
