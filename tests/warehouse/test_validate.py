"""Validation rules on tiny literal frames: exact counts per table and rule, no database."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from features.build import FeatureConfig, build_features
from tests.features.frames import make_sources, subscribed, ts
from warehouse.extract import SourceData
from warehouse.schema import SOURCE_TABLES, contract_schema
from warehouse.settings import Settings
from warehouse.validate import QualityReport, rule_names, validate

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
CHANNELS = ("phone", "email", "chat", "twitter")


def day(n: int) -> datetime:
    return datetime(2024, 5, 1, tzinfo=UTC) + timedelta(days=n)


def customers(ids: list[int | None] | None = None) -> pl.DataFrame:
    ids = [1, 2, 3] if ids is None else ids
    return pl.DataFrame({"customer_id": ids, "signup_at": [day(0)] * len(ids)})


def interactions(**columns: Sequence[object]) -> pl.DataFrame:
    n = len(next(iter(columns.values()))) if columns else 1
    base: dict[str, Sequence[object]] = {
        "interaction_id": list(range(100, 100 + n)),
        "customer_id": [1] * n,
        "opened_at": [day(1)] * n,
        "channel": ["phone"] * n,
        "kind": ["complaint"] * n,
        "is_public": [False] * n,
        "transfers": [0] * n,
        "reopened": [False] * n,
    }
    base.update(columns)
    return pl.DataFrame(base, strict=False)


def run(**frames: pl.DataFrame) -> tuple[SourceData, QualityReport]:
    frames.setdefault("customers", customers())
    return validate(SourceData.from_frames(frames), as_of=AS_OF, known_channels=CHANNELS)


def test_clean_data_passes_untouched() -> None:
    clean, report = run(interactions=interactions(customer_id=[1, 2, 3]))
    assert report.n_quarantined == 0
    assert report.n_normalised == 0
    assert report.rows_kept == report.rows_read
    assert clean.interactions["interaction_id"].to_list() == [100, 101, 102]
    for name, frame in clean.frames().items():
        assert frame.schema == contract_schema(name)


def test_null_ids_in_every_table() -> None:
    frames = {
        "customers": customers([1, None, 2]),
        "subscriptions": pl.DataFrame({"customer_id": [None, 1], "started_at": [day(0)] * 2}),
        "interactions": interactions(customer_id=[None, 1, 1], interaction_id=[1, None, 2]),
        "activity": pl.DataFrame(
            {"customer_id": [None, None, 1], "occurred_at": [day(1)] * 3, "event_type": ["x"] * 3}
        ),
        "retention_contacts": pl.DataFrame({"customer_id": [None], "contacted_at": [day(1)]}),
    }
    clean, report = run(**frames)
    assert {table: rules.get("null_id", 0) for table, rules in report.quarantined.items()} == {
        "customers": 1,
        "subscriptions": 1,
        "interactions": 2,
        "activity": 2,
        "retention_contacts": 1,
    }
    assert clean.interactions["interaction_id"].to_list() == [2]


@pytest.mark.parametrize(
    ("table", "frame", "column"),
    [
        (
            "customers",
            pl.DataFrame({"customer_id": [1, 2], "signup_at": [None, day(0)]}),
            "signup_at",
        ),
        ("subscriptions", pl.DataFrame({"customer_id": [1], "started_at": [None]}), "started_at"),
        ("interactions", interactions(opened_at=[None, day(1)]), "opened_at"),
        ("interactions", interactions(channel=[None, "phone"]), "channel"),
        ("interactions", interactions(kind=[None, "query"]), "kind"),
        ("interactions", interactions(is_public=[None, True]), "is_public"),
        ("interactions", interactions(transfers=[None, 1]), "transfers"),
        ("interactions", interactions(reopened=[None, True]), "reopened"),
        (
            "activity",
            pl.DataFrame({"customer_id": [1], "occurred_at": [None], "event_type": ["x"]}),
            "occurred_at",
        ),
        (
            "activity",
            pl.DataFrame({"customer_id": [1], "occurred_at": [day(1)], "event_type": [None]}),
            "event_type",
        ),
        (
            "retention_contacts",
            pl.DataFrame({"customer_id": [1], "contacted_at": [None]}),
            "contacted_at",
        ),
    ],
)
def test_null_required_names_the_column(table: str, frame: pl.DataFrame, column: str) -> None:
    frames = {table: frame} if table != "customers" else {"customers": frame}
    _, report = run(**frames)
    assert report.quarantined[table] == {f"null_required:{column}": 1}


def test_duplicate_customers_keep_the_earliest_signup() -> None:
    frame = pl.DataFrame(
        {
            "customer_id": [1, 2, 1, 1, 2],
            "signup_at": [day(5), day(3), day(1), day(1), day(3)],
            "segment": ["late", "b-first", "early-first", "early-second", "b-second"],
        }
    )
    clean, report = run(customers=frame)
    assert report.quarantined["customers"] == {"duplicate_customer_id": 3}
    assert clean.customers["segment"].to_list() == ["b-first", "early-first"]


def test_duplicate_interactions_keep_the_earliest_open_then_row_order() -> None:
    frame = interactions(
        interaction_id=[7, 7, 7, 8, 8],
        opened_at=[day(3), day(2), day(2), day(1), day(1)],
        kind=["a", "b", "c", "d", "e"],
    )
    clean, report = run(interactions=frame)
    assert report.quarantined["interactions"] == {"duplicate_interaction_id": 3}
    assert clean.interactions["kind"].to_list() == ["b", "d"]


def test_duplicate_check_ignores_rows_already_quarantined() -> None:
    frame = interactions(interaction_id=[7, 7], opened_at=[None, day(2)])
    clean, report = run(interactions=frame)
    assert report.quarantined["interactions"] == {"null_required:opened_at": 1}
    assert clean.interactions.height == 1


def test_interaction_time_and_transfer_rules() -> None:
    frame = interactions(
        opened_at=[day(2)] * 5,
        first_response_at=[day(1), day(3), None, day(1), day(40)],
        resolved_at=[None, day(1), day(1), day(1), day(50)],
        transfers=[0, 0, -2, -1, 0],
    )
    clean, report = run(interactions=frame)
    assert report.quarantined["interactions"] == {
        "response_before_open": 2,
        "resolved_before_open": 2,
    }
    assert clean.interactions["first_response_at"].to_list() == [day(40)]
    frame = interactions(transfers=[-1, -3, 0])
    _, report = run(interactions=frame)
    assert report.quarantined["interactions"] == {"negative_transfers": 2}


def test_answers_after_as_of_are_kept() -> None:
    later = AS_OF + timedelta(days=3)
    frame = interactions(opened_at=[day(2)], first_response_at=[later], resolved_at=[later])
    clean, report = run(interactions=frame)
    assert report.n_quarantined == 0
    assert clean.interactions["resolved_at"].to_list() == [later]


def test_subscription_ending_before_it_starts() -> None:
    frame = pl.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "started_at": [day(5), day(5), day(5)],
            "ended_at": [day(4), day(5), None],
        }
    )
    clean, report = run(subscriptions=frame)
    assert report.quarantined["subscriptions"] == {"subscription_end_before_start": 1}
    assert clean.subscriptions.height == 2


def test_events_after_as_of_in_every_table() -> None:
    late = AS_OF + timedelta(microseconds=1)
    frames = {
        "customers": pl.DataFrame({"customer_id": [1, 2, 9], "signup_at": [day(0), AS_OF, late]}),
        "subscriptions": pl.DataFrame({"customer_id": [1, 1], "started_at": [late, AS_OF]}),
        "interactions": interactions(opened_at=[late, late, day(1)]),
        "activity": pl.DataFrame(
            {"customer_id": [1], "occurred_at": [late], "event_type": ["login"]}
        ),
        "retention_contacts": pl.DataFrame({"customer_id": [2], "contacted_at": [late]}),
    }
    _, report = run(**frames)
    assert {table: rules for table, rules in report.quarantined.items()} == {
        "customers": {"after_as_of": 1},
        "subscriptions": {"after_as_of": 1},
        "interactions": {"after_as_of": 2},
        "activity": {"after_as_of": 1},
        "retention_contacts": {"after_as_of": 1},
    }


def test_as_of_in_another_zone_is_the_same_instant() -> None:
    plus_two = timezone(timedelta(hours=2))
    frame = interactions(opened_at=[datetime(2024, 6, 1, 1, tzinfo=UTC)])
    data = SourceData.from_frames({"customers": customers(), "interactions": frame})
    as_of = datetime(2024, 6, 1, 2, 30, tzinfo=plus_two)
    _, report = validate(data, as_of=as_of, known_channels=CHANNELS)
    assert report.quarantined["interactions"] == {"after_as_of": 1}


def test_unknown_customers_in_the_other_tables() -> None:
    frames = {
        "customers": pl.DataFrame(
            {"customer_id": [1, 2, 2], "signup_at": [day(0), day(0), day(1)]}
        ),
        "subscriptions": pl.DataFrame({"customer_id": [1, 5, 5], "started_at": [day(0)] * 3}),
        "interactions": interactions(customer_id=[2, 6]),
        "activity": pl.DataFrame(
            {"customer_id": [7], "occurred_at": [day(1)], "event_type": ["login"]}
        ),
        "retention_contacts": pl.DataFrame({"customer_id": [1, 8], "contacted_at": [day(1)] * 2}),
    }
    clean, report = run(**frames)
    assert report.quarantined == {
        "customers": {"duplicate_customer_id": 1},
        "subscriptions": {"unknown_customer": 2},
        "interactions": {"unknown_customer": 1},
        "activity": {"unknown_customer": 1},
        "retention_contacts": {"unknown_customer": 1},
    }
    assert clean.interactions["customer_id"].to_list() == [2]


def test_customers_quarantined_make_their_rows_unknown() -> None:
    frames = {
        "customers": pl.DataFrame({"customer_id": [1, 2], "signup_at": [day(0), None]}),
        "interactions": interactions(customer_id=[1, 2, 2]),
    }
    _, report = run(**frames)
    assert report.quarantined["customers"] == {"null_required:signup_at": 1}
    assert report.quarantined["interactions"] == {"unknown_customer": 2}


def test_a_row_failing_several_rules_counts_once_under_the_first() -> None:
    frame = interactions(
        customer_id=[99, 99, 1],
        opened_at=[AS_OF + timedelta(days=1), day(2), day(2)],
        first_response_at=[day(1), day(1), None],
        transfers=[-1, -1, -1],
    )
    _, report = run(interactions=frame)
    assert report.quarantined["interactions"] == {
        "response_before_open": 2,
        "negative_transfers": 1,
    }
    assert report.n_quarantined == 3
    assert report.rows_read["interactions"] == 3
    assert report.rows_kept["interactions"] == 0


def test_csat_out_of_range_becomes_null() -> None:
    frame = interactions(csat=[0, 1, 5, 6, None, -3])
    clean, report = run(interactions=frame)
    assert report.normalised["interactions"] == {"csat_out_of_range": 3}
    assert report.n_quarantined == 0
    assert clean.interactions["csat"].to_list() == [None, 1, 5, None, None, None]


def test_channels_are_trimmed_lowercased_and_unknown_ones_become_other() -> None:
    frame = interactions(
        channel=[" Phone", "EMAIL ", "fax", "", "Other", "carrier pigeon"],
        kind=[" Complaint ", "QUERY", "praise", "x", "y", "z"],
    )
    clean, report = run(interactions=frame)
    assert report.normalised["interactions"] == {"unknown_channel": 3}
    assert clean.interactions["channel"].to_list() == [
        "phone",
        "email",
        "other",
        "other",
        "other",
        "other",
    ]
    assert clean.interactions["kind"].to_list()[:2] == ["complaint", "query"]


def test_known_channels_compare_after_trimming_and_lowercasing() -> None:
    data = SourceData.from_frames(
        {"customers": customers(), "interactions": interactions(channel=["whatsapp", "Fax"])}
    )
    clean, report = validate(data, as_of=AS_OF, known_channels=[" WhatsApp "])
    assert clean.interactions["channel"].to_list() == ["whatsapp", "other"]
    assert report.normalised["interactions"] == {"unknown_channel": 1}


def test_normalisation_counts_only_kept_rows() -> None:
    frame = interactions(customer_id=[1, 42], channel=["fax", "fax"], csat=[9, 9])
    _, report = run(interactions=frame)
    assert report.quarantined["interactions"] == {"unknown_customer": 1}
    assert report.normalised["interactions"] == {"csat_out_of_range": 1, "unknown_channel": 1}


def test_report_is_json_able_with_samples_and_summary() -> None:
    frame = interactions(customer_id=[1] * 3 + [50] * 27, transfers=[-1] * 3 + [0] * 27)
    _, report = run(interactions=frame)
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["quarantined"]["interactions"] == {
        "negative_transfers": 3,
        "unknown_customer": 27,
    }
    assert payload["n_quarantined"] == 30
    assert set(payload["rows_read"]) == set(SOURCE_TABLES)
    sample = report.samples["interactions"]
    assert sample.height == 20
    assert sample.columns == [*contract_schema("interactions").names(), "rule"]
    assert sample["rule"].head(4).to_list() == ["negative_transfers"] * 3 + ["unknown_customer"]
    assert "customers" not in report.samples
    lines = report.summary_lines()
    assert lines[2] == (
        "interactions: 30 read, 0 kept; 30 quarantined (negative_transfers 3, unknown_customer 27)"
    )


def test_rule_names_are_in_checking_order() -> None:
    assert rule_names("interactions")[:4] == [
        "null_id",
        "null_required:opened_at",
        "null_required:channel",
        "null_required:kind",
    ]
    assert rule_names("customers")[-1] == "after_as_of"
    assert rule_names("activity")[-2:] == ["after_as_of", "unknown_customer"]


def test_naive_as_of_is_rejected() -> None:
    with pytest.raises(ValueError, match="no time zone"):
        validate(SourceData.from_frames({}), as_of=datetime(2024, 1, 1), known_channels=CHANNELS)


def test_empty_tables_validate_to_empty_tables() -> None:
    clean, report = validate(SourceData.from_frames({}), as_of=AS_OF, known_channels=CHANNELS)
    assert clean.row_counts() == dict.fromkeys(SOURCE_TABLES, 0)
    assert report.n_quarantined == 0


def test_a_configured_public_channel_survives_validation_and_counts_as_public() -> None:
    """A public channel left out of known_channels must not become "other"."""
    settings = Settings(known_channels=("phone", "email"), public_channels=(" TikTok ",))
    assert settings.public_channels == ("tiktok",)
    assert settings.known_channels == ("phone", "email", "tiktok")
    sources = make_sources(
        subscriptions=subscribed(1),
        interactions=[
            {"customer_id": 1, "opened_at": ts("2026-02-20"), "channel": c, "kind": "complaint"}
            for c in ("TikTok", "phone")
        ],
    )
    data = SourceData.from_frames({name: frame.collect() for name, frame in sources.items()})
    as_of = ts("2026-03-01")
    clean, report = validate(data, as_of=as_of, known_channels=settings.known_channels)
    assert clean.interactions["channel"].to_list() == ["tiktok", "phone"]
    assert report.normalised.get("interactions", {}).get("unknown_channel", 0) == 0
    config = FeatureConfig.from_settings(settings)
    features = build_features(clean.lazy(), [as_of.date()], config, []).collect()
    assert features.filter(pl.col("customer_id") == 1)["public_complaints_30d"].to_list() == [1.0]
