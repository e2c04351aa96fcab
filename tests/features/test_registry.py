"""The feature registry: names, documentation fields and reason sentences."""

from __future__ import annotations

import re

import pytest

from features.registry import (
    FEATURES,
    GROUPS,
    HELPERS,
    MAX_FEATURE_NAME_LENGTH,
    SOURCES,
    Typical,
    categorical_features,
    event_type_features,
    event_type_slug,
    feature_columns,
    get_feature,
    helper_columns,
    is_reason_topic,
    reason_fields,
    reason_topics,
    render_reason,
)
from warehouse.schema import build_warehouse
from warehouse.settings import Settings

REQUIRED = (
    "open_complaints",
    "oldest_open_complaint_days",
    "unanswered_contacts_30d",
    "days_since_last_activity",
    "days_since_last_contact",
    "tenure_days",
    "segment",
    "plan",
    "customer_value",
    "current_mrr",
)
EVENT_TYPES = ("login", "Page View")


def all_features() -> list:  # type: ignore[type-arg]
    return [*FEATURES, *event_type_features(EVENT_TYPES), *HELPERS]


def test_required_features_exist_with_their_meaning() -> None:
    names = feature_columns(EVENT_TYPES)
    for name in REQUIRED:
        assert name in names
    assert get_feature("segment").categorical
    assert get_feature("plan").categorical
    assert get_feature("unanswered_contacts_30d").window_days == 30
    assert get_feature("customer_value").unit == "currency"


def test_every_feature_is_documented_and_well_formed() -> None:
    features = all_features()
    names = [f.name for f in features]
    assert len(names) == len(set(names))
    for feature in features:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", feature.name), feature.name
        assert feature.group in GROUPS, feature.name
        assert feature.source in SOURCES, feature.name
        assert feature.description.endswith("."), feature.name
        assert feature.unit, feature.name
        assert feature.expr is not None, feature.name
        assert feature.window_days in (None, 7, 30, 90), feature.name
        # the trend (and its helper) compare the last 30 days with the 60 before: 90 days
        spans_90_days = feature.name in ("activity_trend_30d", "activity_drop_30d")
        if feature.window_days is not None and not spans_90_days:
            assert feature.name.endswith(f"_{feature.window_days}d"), feature.name
    assert {f.group for f in FEATURES} == set(GROUPS)


def test_reason_templates_name_columns_of_the_feature_row() -> None:
    columns = {f.name for f in all_features()}
    with_reason = [f for f in all_features() if f.reason is not None]
    assert len(with_reason) >= 40
    for feature in with_reason:
        assert feature.reason is not None
        fields = reason_fields(feature.reason)
        assert feature.name in fields or "activity_drop_30d" in fields, feature.name
        assert set(fields) <= columns, feature.name


def test_helpers_are_not_model_features() -> None:
    assert all(not h.model_feature for h in HELPERS)
    assert helper_columns() == [h.name for h in HELPERS]
    assert not set(helper_columns()) & set(feature_columns(EVENT_TYPES))
    assert all(f.model_feature for f in FEATURES)


def test_feature_columns_and_categoricals() -> None:
    columns = feature_columns(EVENT_TYPES)
    assert columns[: len(FEATURES)] == [f.name for f in FEATURES]
    assert columns[len(FEATURES) :] == [
        "activity_login_events_30d",
        "activity_login_events_90d",
        "activity_login_value_90d",
        "activity_page_view_events_30d",
        "activity_page_view_events_90d",
        "activity_page_view_value_90d",
    ]
    assert categorical_features() == ["plan", "segment"]
    with pytest.raises(ValueError, match="'Log In' and 'log-in' both map"):
        feature_columns(["Log In", "log-in"])


def test_event_type_slugs() -> None:
    assert event_type_slug("Page View") == "page_view"
    assert event_type_slug("--order--") == "order"
    assert re.fullmatch(r"t[0-9a-f]{8}", event_type_slug("überprüfung"[:1]))
    assert event_type_slug("ü") != event_type_slug("ö")


def test_get_feature_for_static_helper_and_event_features() -> None:
    assert get_feature("open_complaints").group == "open_problems"
    assert get_feature("slowest_public_channel_90d").model_feature is False
    generated = get_feature("activity_page_view_events_90d")
    assert (generated.group, generated.unit, generated.window_days) == ("engagement", "events", 90)
    assert get_feature("activity_a_value_90d_value_90d").description.startswith(
        "Sum of the value of 'a_value_90d'"
    )
    for name in ("no_such_feature", "activity_login_events_45d", "activity__events_30d"):
        with pytest.raises(KeyError):
            get_feature(name)


TYPICAL = {
    "public_first_response_hours_max_90d": 10.0,
    "days_since_last_activity": 5.0,
    "days_since_last_contact": 20.0,
    "activity_login_events_30d": 25.0,
    "activity_refund_events_30d": 0.0,
    "activity_order_value_90d": 105.3,
    "contacts_30d": 1.0,
    "tenure_days": 605.0,
    "current_mrr": 24.99,
    "customer_value": 28.5,
}
"""Tonight's typical values for the cases below."""


@pytest.mark.parametrize(
    ("name", "row", "expected"),
    [
        (
            "open_complaints",
            {"open_complaints": 3.0, "oldest_open_complaint_days": 12.4},
            "3 complaints still open, the oldest opened 12 days ago",
        ),
        (
            "open_complaints",
            {"open_complaints": 1.0, "oldest_open_complaint_days": 0.3},
            "1 complaint still open, opened less than a day ago",
        ),
        (
            "oldest_open_complaint_days",
            {"oldest_open_complaint_days": 0.6},
            "a complaint has been open for less than a day",
        ),
        (
            "oldest_open_complaint_days",
            {"oldest_open_complaint_days": 28.2},
            "a complaint has been open for 28 days",
        ),
        (
            "open_complaints",
            {"open_complaints": 1.0, "oldest_open_complaint_days": 1.2},
            "1 complaint still open, opened 1 day ago",
        ),
        ("open_complaints", {"open_complaints": 0.0, "oldest_open_complaint_days": None}, None),
        ("open_complaints", {"open_complaints": None}, None),
        (
            "public_first_response_hours_max_90d",
            {"public_first_response_hours_max_90d": 31.2, "slowest_public_channel_90d": "twitter"},
            "the first answer to a public complaint on twitter took 31 h (typical: 10 h)",
        ),
        (  # 5 h is no slower than usual
            "public_first_response_hours_max_90d",
            {"public_first_response_hours_max_90d": 5.0, "slowest_public_channel_90d": "twitter"},
            None,
        ),
        (
            "public_first_response_hours_max_90d",
            {"public_first_response_hours_max_90d": 31.2, "slowest_public_channel_90d": None},
            None,
        ),
        (
            "public_complaints_unanswered_30d",
            {"public_complaints_unanswered_30d": 2.0, "unanswered_public_channel_30d": "facebook"},
            "2 public complaints from the last 30 days still without an answer, "
            "the oldest on facebook",
        ),
        (
            "unanswered_contacts_30d",
            {"unanswered_contacts_30d": 1.0},
            "1 contact from the last 30 days still without an answer",
        ),
        (
            "activity_trend_30d",
            {"activity_trend_30d": 0.4, "activity_drop_30d": 0.6},
            "activity down 60% in the last 30 days against the 60 days before",
        ),
        ("activity_trend_30d", {"activity_trend_30d": 1.2, "activity_drop_30d": -0.2}, None),
        ("days_since_last_activity", {"days_since_last_activity": 3.0}, None),
        (
            "days_since_last_activity",
            {"days_since_last_activity": 21.4},
            "no activity for 21 days (typical: 5 days)",
        ),
        (
            "days_since_last_contact",
            {"days_since_last_contact": 0.4},
            "last contact with us less than a day ago (typical: 20 days)",
        ),
        (
            "days_since_last_contact",
            {"days_since_last_contact": 75.0},
            "last contact with us 75 days ago (typical: 20 days)",
        ),
        ("days_since_last_contact", {"days_since_last_contact": 16.0}, None),
        ("csat_mean_30d", {"csat_mean_30d": 4.2}, None),
        (
            "csat_mean_30d",
            {"csat_mean_30d": 2.5},
            "average satisfaction 2.5 of 5 in the last 30 days",
        ),
        (
            "low_csat_90d",
            {"low_csat_90d": 2.0},
            "2 low satisfaction scores (1-2) in the last 90 days",
        ),
        (
            "repeat_contacts_30d",
            {"repeat_contacts_30d": 3.0},
            "had to get back in touch within 7 days 3 times in the last 30 days",
        ),
        (
            "transfers_per_contact_30d",
            {"transfers_per_contact_30d": 1.5},
            "1.5 transfers per contact in the last 30 days",
        ),
        (
            "transfers_per_contact_90d",
            {"transfers_per_contact_90d": 1.0},
            "1.0 transfers per contact in the last 90 days",
        ),
        (
            "first_response_hours_p90_90d",
            {"first_response_hours_p90_90d": 27.6},
            "one first answer in ten took 28 h or more in the last 90 days",
        ),
        (
            "activity_login_events_30d",
            {"activity_login_events_30d": 12.0},
            "12 'login' events in the last 30 days (typical: 25)",
        ),
        (
            "activity_login_events_30d",
            {"activity_login_events_30d": 0.0},
            "no 'login' events in the last 30 days (typical: 25)",
        ),
        (
            "activity_login_events_30d",
            {"activity_login_events_30d": 67.0},
            "67 'login' events in the last 30 days (typical: 25)",
        ),
        ("activity_login_events_30d", {"activity_login_events_30d": 22.0}, None),  # typical
        # A zero count of something whose presence raises risk is no reason.
        ("activity_refund_events_30d", {"activity_refund_events_30d": 0.0}, None),
        (
            "activity_refund_events_30d",
            {"activity_refund_events_30d": 2.0},
            "2 'refund' events in the last 30 days (typical: 0)",
        ),
        (
            "activity_order_value_90d",
            {"activity_order_value_90d": 1562.7},
            "'order' value 1,562.70 in the last 90 days (typical: 105.30)",
        ),
        ("contacts_30d", {"contacts_30d": 2.0}, None),
        (
            "contacts_30d",
            {"contacts_30d": 9.0},
            "9 contacts with us in the last 30 days (typical: 1)",
        ),
        ("tenure_days", {"tenure_days": 45.2}, "customer for only 45 days (typical: 605 days)"),
        ("tenure_days", {"tenure_days": 400.0}, None),
        (
            "current_mrr",
            {"current_mrr": 499.0},
            "pays 499.00 a month for the subscription (typical: 24.99)",
        ),
        ("plan", {"plan": "basic"}, "on the 'basic' plan"),
        ("plan", {"plan": None}, None),
        ("segment", {"segment": "smb"}, "in the 'smb' segment"),
        ("customer_value", {"customer_value": 586.29}, "monthly value 586.29 (typical: 28.50)"),
        ("customer_value", {"customer_value": 30.0}, None),
    ],
)
def test_render_reason(name: str, row: dict[str, object], expected: str | None) -> None:
    assert render_reason(name, row, TYPICAL) == expected


def test_a_comparison_needs_tonights_typical_value() -> None:
    row = {"activity_login_events_30d": 12.0, "tenure_days": 45.0}
    assert render_reason("activity_login_events_30d", row) is None
    assert (
        render_reason("activity_login_events_30d", row, {"activity_login_events_30d": None}) is None
    )
    assert render_reason("tenure_days", row, {"tenure_days": 60.0}) is None  # not far enough
    # Features without a comparison do not need it.
    assert render_reason("complaints_30d", {"complaints_30d": 2.0}) == (
        "2 complaints in the last 30 days"
    )


def test_typical_comparisons() -> None:
    below, above, either = Typical("below"), Typical("above", min_gap=2), Typical("either")
    assert below.differs(12, 25) and not below.differs(20, 25) and not below.differs(40, 25)
    assert not below.differs(0.5, 1)  # within the absolute gap
    assert above.differs(9, 1) and not above.differs(2, 1) and not above.differs(0, 1)
    assert either.differs(0, 25) and either.differs(2, 0) and not either.differs(0, 0)
    assert not either.differs(float("nan"), 3)
    assert "typical / 1.5" in below.describe() and "by >= 2" in above.describe()


def test_every_model_feature_has_a_reason() -> None:
    """Issue 3: every feature carries a plain-language template to explain a risk."""
    for feature in [*FEATURES, *event_type_features(EVENT_TYPES)]:
        assert feature.reason is not None, feature.name
    assert all(h.reason is None for h in HELPERS)


def test_topics_and_context_reasons() -> None:
    topic = {f.name: f.reason_topic for f in all_features()}
    assert {topic[f"complaints_{d}d"] for d in (7, 30, 90)} == {"complaints"}
    assert (
        topic["open_complaints"] == topic["oldest_open_complaint_days"] != topic["complaints_30d"]
    )
    assert topic["csat_mean_30d"] == topic["low_csat_90d"]
    assert topic["activity_trend_30d"] == topic["days_since_last_activity"]
    assert topic["activity_login_events_30d"] == topic["activity_login_value_90d"]
    assert topic["activity_login_events_30d"] != topic["activity_page_view_events_30d"]
    # A topic is one kind of thing: one group, and all context or none.
    for name in set(topic.values()):
        members = [f for f in all_features() if f.reason and f.reason_topic == name]
        assert len({f.group for f in members}) <= 1, name
        assert len({f.context for f in members}) <= 1, name
    context = {f.name for f in FEATURES if f.context}
    assert context == {"tenure_days", "current_mrr", "plan", "segment", "customer_value"}
    assert "complaints" in reason_topics() and "activity_page_view" not in reason_topics()
    assert is_reason_topic("complaints") and is_reason_topic("activity_page_view")
    assert not is_reason_topic("no_such_topic")


def test_every_template_renders_for_a_typical_row() -> None:
    row: dict[str, object] = {f.name: 0.5 for f in all_features()}
    row.update({f.name: 40.0 for f in all_features() if f.reason and "hours" in f.name})
    row.update(
        {"slowest_public_channel_90d": "twitter", "unanswered_public_channel_30d": "instagram"}
    )
    row.update({"csat_mean_30d": 2.0, "csat_mean_90d": 2.0, "contacts_7d": 5.0})
    row.update({"contacts_30d": 5.0, "contacts_90d": 5.0, "days_since_last_activity": 9.0})
    row.update({"transfers_per_contact_30d": 2.0, "transfers_per_contact_90d": 2.0})
    row.update({"activity_trend_30d": 0.5, "activity_drop_30d": 0.5})
    row.update({"plan": "basic", "segment": "smb"})
    typical: dict[str, float] = {}
    for feature in all_features():
        if feature.typical is None:
            continue
        if feature.typical.direction == "above":
            row[feature.name] = 50.0
            typical[feature.name] = 1.0
        else:
            typical[feature.name] = 400.0
    for feature in all_features():
        sentence = render_reason(feature.name, row, typical)
        if feature.reason is None:
            assert sentence is None
        else:
            assert sentence, feature.name
            assert "{" not in sentence, sentence
            assert (feature.typical is not None) == sentence.endswith(")"), sentence


def test_unknown_feature_reason_raises() -> None:
    with pytest.raises(KeyError):
        render_reason("no_such_feature", {})


def test_long_event_types_give_feature_names_that_fit_the_reason_code_columns() -> None:
    columns = build_warehouse(Settings())["retention_list"].c
    width = min(columns[f"reason_{k}_code"].type.length or 0 for k in (1, 2, 3))
    assert width == MAX_FEATURE_NAME_LENGTH
    long_a = "Customer support portal visit from mobile app v2 " + "a" * 15
    long_b = long_a[:-1] + "b"
    assert len(long_a) == 64  # the contract's longest event_type
    names = feature_columns([long_a, long_b, "x" * 64, "short"])
    assert max(len(name) for name in names) <= width
    slug_a, slug_b = event_type_slug(long_a), event_type_slug(long_b)
    assert slug_a != slug_b
    assert slug_a.startswith("customer_support_portal_visit_from_")
    assert event_type_slug("short") == "short"
    feature = get_feature(f"activity_{slug_a}_events_90d")
    assert feature.source == "activity" and feature.window_days == 90


def test_durations_read_in_hours_up_to_two_days_then_in_days() -> None:
    name = "longest_unanswered_wait_hours_30d"
    cases = ((10.4, "10 h"), (47.0, "47 h"), (48.0, "2 days"), (656.0, "27 days"))
    for hours, said in cases:
        sentence = render_reason(name, {name: hours})
        assert sentence == f"a contact has been waiting {said} for a first answer"
