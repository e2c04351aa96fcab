"""The reason -> action rule table: packaged defaults, conditions, overrides, errors."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from models.actions import (
    ActionRulesError,
    choose_action,
    default_action_rules,
    load_action_rules,
    recommend,
    recommend_actions,
)
from models.reasons import explain_listed
from models.train import TrainedModel

NO_PROBLEMS = {
    "open_complaints": 0.0,
    "unanswered_contacts_90d": 0.0,
    "public_complaints_unanswered_90d": 0.0,
}


def test_default_rules_cover_the_main_moments_of_truth() -> None:
    rules = load_action_rules(None)
    open_one = {**NO_PROBLEMS, "open_complaints": 1.0}
    assert recommend(rules, "open_complaints", open_one)[0] == "resolve_and_call_back"
    assert recommend(
        rules, "public_complaints_unanswered_30d", {"public_complaints_unanswered_90d": 1}
    )[0] == ("answer_publicly_then_privately")
    assert recommend(rules, "transfers_per_contact_30d")[0] == "assign_one_owner"
    assert recommend(rules, "activity_trend_30d", NO_PROBLEMS)[0] == "re_engagement_offer"
    assert recommend(rules, "reopened_complaints_30d", NO_PROBLEMS)[0] == (
        "senior_agent_confirms_fix"
    )
    # No reason, or a code the registry does not know: the default.
    assert recommend(rules, None) == (rules.default.action_code, rules.default.text)
    assert recommend(rules, "no_such_feature")[0] == "personal_check_in"


@pytest.mark.parametrize(
    ("reason", "numbers", "action"),
    [
        # Recent complaints, all resolved: check the fix held; one still open: resolve it.
        ("complaints_30d", {"open_complaints": 0}, "check_fix_held"),
        ("complaints_90d", {"open_complaints": 0}, "check_fix_held"),
        ("complaints_90d", {"open_complaints": 2}, "resolve_and_call_back"),
        ("oldest_open_complaint_days", {"open_complaints": 1}, "resolve_and_call_back"),
        ("reopened_complaints_90d", {"open_complaints": 1}, "escalate_open_complaint"),
        # Slow answers in the past vs a request still waiting.
        ("first_response_hours_max_30d", {}, "apologise_for_slow_service"),
        (
            "first_response_hours_max_30d",
            {"unanswered_contacts_90d": 1},
            "answer_now_and_apologise",
        ),
        ("unanswered_contacts_30d", {"unanswered_contacts_90d": 2}, "answer_now_and_apologise"),
        ("resolution_hours_mean_30d", {"open_complaints": 1}, "resolve_and_call_back"),
        # Public complaints: unanswered -> answer publicly; answered -> follow up.
        ("public_complaints_30d", {}, "follow_up_public_complaint"),
        (
            "public_complaints_30d",
            {"public_complaints_unanswered_90d": 1},
            "answer_publicly_then_privately",
        ),
        ("public_first_response_hours_max_90d", {}, "follow_up_public_complaint"),
    ],
)
def test_actions_fit_the_reason_and_the_customers_numbers(
    reason: str, numbers: dict[str, float], action: str
) -> None:
    values = {**NO_PROBLEMS, **numbers}
    assert recommend(load_action_rules(None), reason, values)[0] == action


def test_engagement_actions_follow_the_direction_of_the_value() -> None:
    rules = load_action_rules(None)
    typical = {"activity_refund_events_30d": 0.0, "activity_login_events_30d": 25.0}
    few_logins = {**NO_PROBLEMS, "activity_login_events_30d": 3.0}
    many_refunds = {**NO_PROBLEMS, "activity_refund_events_30d": 3.0}
    assert recommend(rules, "activity_login_events_30d", few_logins, typical)[0] == (
        "re_engagement_offer"
    )
    assert recommend(rules, "activity_refund_events_30d", many_refunds, typical)[0] == (
        "ask_about_unusual_activity"
    )
    contact = {"days_since_last_contact": 20.0}
    recent = {**NO_PROBLEMS, "days_since_last_contact": 1.0}
    silent = {**NO_PROBLEMS, "days_since_last_contact": 80.0}
    assert recommend(rules, "days_since_last_contact", recent, contact)[0] == (
        "follow_up_recent_contact"
    )
    assert recommend(rules, "days_since_last_contact", silent, contact)[0] == "reconnect_call"


def test_the_first_reason_with_a_rule_that_holds_decides() -> None:
    rules = load_action_rules(None)
    values = {**NO_PROBLEMS, "open_complaints": 1.0}
    # No offer while a complaint is open: the activity reason has no rule that holds, so
    # the complaint reason after it decides.
    rule, by = choose_action(rules, ["activity_trend_30d", "complaints_90d"], values)
    assert (rule.action_code, by) == ("resolve_and_call_back", "complaints_90d")
    rule, by = choose_action(rules, ["activity_trend_30d", None], values)
    assert (rule.action_code, by) == ("personal_check_in", None)
    rule, by = choose_action(rules, ["activity_trend_30d", "complaints_90d"], NO_PROBLEMS)
    assert (rule.action_code, by) == ("re_engagement_offer", "activity_trend_30d")
    # Context reasons: segment says nothing to do, the plan does.
    assert recommend(rules, ["segment"], NO_PROBLEMS)[0] == "personal_check_in"
    assert recommend(rules, ["plan"], NO_PROBLEMS)[0] == "plan_review"
    assert recommend(rules, ["tenure_days"], NO_PROBLEMS)[0] == "onboarding_check_in"


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

[[topics.complaints]]
when = { complaints_30d = ">= 5", open_complaints = "== 0" }
action_code = "complaint_review"
text = "Review every recent complaint with the customer."

[[topics.complaints]]
action_code = "complaint_check"
text = "Check the recent complaints were put right."
""",
        encoding="utf-8",
    )
    rules = load_action_rules(path)
    assert recommend(rules, "contacts_30d") == ("senior_owner", "A senior agent takes the case.")
    assert recommend(rules, "open_complaints")[0] == "ceo_call"
    many = {"complaints_30d": 6, "open_complaints": 0}
    assert recommend(rules, "complaints_90d", many)[0] == "complaint_review"
    assert recommend(rules, "complaints_90d", {**many, "open_complaints": 1})[0] == (
        "complaint_check"  # the topic entry decides: no fall-through to the group
    )
    assert recommend(rules, "reopened_complaints_30d", NO_PROBLEMS)[0] == (
        "senior_agent_confirms_fix"  # packaged entries kept
    )
    assert rules.sources == ("models/default_actions.toml", str(path))
    assert default_action_rules().groups["effort"][0].action_code == "assign_one_owner"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[oops]\nx = 1\n", "unknown top-level key"),
        ("[groups.loyalty]\naction_code='a'\ntext='b'\n", "groups.loyalty is not a feature group"),
        ("[reasons.no_such]\naction_code='a'\ntext='b'\n", "reasons.no_such is not a feature"),
        ("[topics.no_such]\naction_code='a'\ntext='b'\n", "topics.no_such is not a reason topic"),
        ("[default]\naction_code='a'\n", "default.text must be a non-empty string"),
        ("[default]\naction_code='a'\ntext='b'\ncolour='red'\n", r"\[default\] has unknown key"),
        (
            "[default]\naction_code='a'\ntext='b'\nwhen={open_complaints='>= 1'}\n",
            r"\[default\] has unknown key\(s\) when",
        ),
        ("[default]\naction_code='" + "x" * 65 + "'\ntext='b'\n", "at most 64"),
        ("[default\n", "not valid TOML"),
        (
            "[groups.effort]\naction_code='a'\ntext='b'\nwhen={open_complaints='about 1'}\n",
            r"groups.effort.when.open_complaints = 'about 1' is not a condition",
        ),
        (
            "[groups.effort]\naction_code='a'\ntext='b'\nwhen={open_complaints=1}\n",
            "groups.effort.when.open_complaints must be a string",
        ),
        (
            "[groups.effort]\naction_code='a'\ntext='b'\nwhen={no_such='> 1'}\n",
            "'no_such' is not a feature",
        ),
        (
            "[groups.effort]\naction_code='a'\ntext='b'\nwhen={segment='== 1'}\n",
            "'segment' is categorical",
        ),
        (
            "[groups.effort]\naction_code='a'\ntext='b'\nwhen={open_complaints='> typical'}\n",
            "'open_complaints' is not compared with a typical value",
        ),
        ("groups.effort = []\n", r"\[\[groups.effort\]\] has no rules"),
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


def test_a_number_the_customer_lacks_holds_no_condition() -> None:
    rules = load_action_rules(None)
    # Null or absent open_complaints: not known to be open, so no "resolve" promise.
    assert recommend(rules, "complaints_30d", {})[0] == "check_fix_held"
    assert recommend(rules, "complaints_30d", {"open_complaints": None})[0] == "check_fix_held"
    # The reason itself says what is unanswered, whatever else the frame carries.
    assert recommend(rules, "public_complaints_unanswered_30d", {})[0] == (
        "answer_publicly_then_privately"
    )
    assert recommend(rules, "unanswered_contacts_7d", {})[0] == "answer_now_and_apologise"
    # A typical value that is not known: neither direction's rule holds.
    assert recommend(rules, "activity_login_events_30d", NO_PROBLEMS, {})[0] == (
        "personal_check_in"
    )


def test_recommend_actions_over_a_frame() -> None:
    rules = load_action_rules(None)
    frame = pl.DataFrame(
        {
            "customer_id": [3, 1, 2, 4, 5],
            "reason_1_code": ["open_complaints", None, "contacts_30d", "complaints_30d", None],
            "reason_2_code": [None, None, None, None, "complaints_30d"],
            "open_complaints": [1.0, 0.0, 0.0, 0.0, 2.0],
        }
    )
    out = recommend_actions(rules, frame)
    assert out["customer_id"].to_list() == [3, 1, 2, 4, 5]
    assert out["action_code"].to_list() == [
        "resolve_and_call_back",
        "personal_check_in",
        "assign_one_owner",
        "check_fix_held",
        "resolve_and_call_back",  # the second reason decides when the first is empty
    ]
    assert out["recommended_action"].null_count() == 0
    with pytest.raises(ValueError, match="no reason code column"):
        recommend_actions(rules, frame.select("customer_id"))


def test_listed_actions_never_contradict_the_customers_numbers(
    trained_model: TrainedModel, scoring_features: pl.DataFrame
) -> None:
    # The public-moments rules read the 90-day count, which the test model lacks.
    features = scoring_features.with_columns(
        public_complaints_unanswered_90d=pl.col("public_complaints_unanswered_30d"),
    )
    reasons = explain_listed(trained_model, features, features["customer_id"])
    out = recommend_actions(load_action_rules(None), reasons).join(
        features, on="customer_id", how="left"
    )
    assert out["action_code"].null_count() == 0
    resolve = out.filter(pl.col("action_code") == "resolve_and_call_back")
    assert resolve.height > 0 and (resolve["open_complaints"] >= 1).all()
    public = out.filter(pl.col("action_code") == "answer_publicly_then_privately")
    assert public.height > 0 and (public["public_complaints_unanswered_30d"] >= 1).all()
    offers = out.filter(pl.col("action_code").is_in(["re_engagement_offer", "plan_review"]))
    assert offers.height > 0 and (offers["open_complaints"] == 0).all()
