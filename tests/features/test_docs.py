"""docs/features.md lists every feature exactly as the registry defines it."""

from __future__ import annotations

from features.docs import DOC_PATH, END, START, feature_reference, replace_reference
from features.registry import FEATURES, HELPERS, event_type_features


def test_feature_reference_in_the_docs_is_current() -> None:
    document = DOC_PATH.read_text()
    assert replace_reference(document) == document, "run: python -m features.docs --write"


def test_reference_lists_every_feature_with_window_and_unit() -> None:
    reference = feature_reference()
    assert reference.startswith(START) and reference.endswith(END)
    for feature in (*FEATURES, *HELPERS):
        row = next(
            line for line in reference.splitlines() if line.startswith(f"| `{feature.name}`")
        )
        assert f"| {feature.unit} |" in row
    for feature in event_type_features(["type"]):
        generic = feature.name.replace("activity_type_", "activity_<type>_")
        assert f"| `{generic}`" in reference


def test_reference_shows_when_a_reason_applies_and_its_topic() -> None:
    lines = {line.split(" | ")[0]: line for line in feature_reference().splitlines()}
    tenure = lines["| `tenure_days`"]
    assert "`customer for only {tenure_days:#day|days|less than a day}`" in tenure.replace(
        "\\|", "|"
    )
    assert "`< 365`; `<= typical / 2, by >= 30`" in tenure
    assert tenure.endswith("| `tenure_days` (context) |")
    assert lines["| `complaints_30d`"].endswith("| `> 0` | `complaints` |")
    generic = lines["| `activity_<type>_events_30d`"]
    assert "(typical: {typical:,.0f})" in generic and generic.endswith("| `activity_<type>` |")
    assert lines["| `slowest_public_channel_90d`"].endswith("| - | - | - |")
