"""The feature registry: names, documentation fields and reason sentences."""

from __future__ import annotations

import re

import pytest

from features.registry import (
    FEATURES,
    GROUPS,
    HELPERS,
    SOURCES,
    categorical_features,
    event_type_features,
    event_type_slug,
    feature_columns,
    get_feature,
    helper_columns,
    reason_fields,
    render_reason,
)

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


@pytest.mark.parametrize(
    ("name", "row", "expected"),
    [
        (
            "open_complaints",
            {"open_complaints": 3.0, "oldest_open_complaint_days": 12.4},
            "3 complaints still open, the oldest for 12 days",
        ),
        (
            "open_complaints",
            {"open_complaints": 1.0, "oldest_open_complaint_days": 1.2},
            "1 complaint still open, the oldest for 1 day",
        ),
        ("open_complaints", {"open_complaints": 0.0, "oldest_open_complaint_days": None}, None),
        ("open_complaints", {"open_complaints": None}, None),
        (
            "public_first_response_hours_max_90d",
            {"public_first_response_hours_max_90d": 31.2, "slowest_public_channel_90d": "twitter"},
            "the first answer to a public complaint on twitter took 31 h",
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
            "no activity for 21 days",
        ),
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
            "transferred 1.5 times per contact in the last 30 days",
        ),
        (
            "first_response_hours_p90_90d",
            {"first_response_hours_p90_90d": 27.6},
            "one first answer in ten took 28 h or more in the last 90 days",
        ),
        (
            "activity_login_events_30d",
            {"activity_login_events_30d": 0.0},
            "0 'login' events in the last 30 days",
        ),
        ("tenure_days", {"tenure_days": 30.0}, None),
        ("segment", {"segment": "smb"}, None),
    ],
)
def test_render_reason(name: str, row: dict[str, object], expected: str | None) -> None:
    assert render_reason(name, row) == expected


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
    for feature in all_features():
        sentence = render_reason(feature.name, row)
        if feature.reason is None:
            assert sentence is None
        else:
            assert sentence, feature.name
            assert "{" not in sentence, sentence


def test_unknown_feature_reason_raises() -> None:
    with pytest.raises(KeyError):
        render_reason("no_such_feature", {})
