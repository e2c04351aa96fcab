"""Random source frames through the validation layer and the feature builder.

Hypothesis draws the shape of each example (rows per table 0-50, the form of every
timestamp column, how often values are null, the ``as_of`` instant, the known channels)
and a seeded random generator fills in the values, which keeps 100 examples within
seconds: ids from a small pool (so duplicates and matches across tables happen) or from
the whole Int64 range, text with unicode, control characters and empty strings, extreme
integers and floats (NaN, infinities, 1e308), timestamps from 1900 to 9999 (half of them
near ``as_of``) as UTC, naive, other-zone or ISO text with and without offsets (now and
then unparseable).

:func:`~warehouse.validate.validate` must either return a consistent report and clean
frames or raise ``ValueError`` naming a source table; anything else fails the test. The
feature builder must then work on whatever validation kept.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from features.build import FeatureConfig, build_features, discover_event_types
from features.registry import feature_columns
from warehouse.extract import EVENT_TIME, SourceData
from warehouse.schema import SOURCE_TABLES, contract_schema, required_not_null
from warehouse.validate import OTHER_CHANNEL, QualityReport, validate

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
NEAR_DAYS = 120
"""Most timestamps fall within this many days before ``as_of``, where features look."""
NEAR_SHARE = 0.75
NULL_SHARES = (0.0, 0.0, 0.0, 0.05, 0.05, 0.3, 1.0)
"""How often a column's values are null: mostly never, sometimes always."""
GARBAGE_SHARES = (0.0,) * 12 + (0.02, 0.3)
"""How often a text timestamp column holds unparseable text: in about one column in seven."""

CHANNELS = ("phone", "email", "chat", "twitter", "facebook", "web")
KINDS = ("complaint", "query", "request", "praise")
EVENT_TYPES = ("login", "order", "refund", "support_visit")
ZONES = ("UTC", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati")
ODD_TEXT = (
    "",
    " ",
    " Phone ",
    "EMAIL",
    "fax",
    "café",
    "日本語",
    "😀",
    "עברית",
    "\u200b",
    "tab\tand\nnewline",
    "nul\x00byte",
    "'; DROP TABLE customers; --",
    "x" * 300,
)
GARBAGE_TIMES = ("yesterday", "01/11/2026", "", "  ", "2026-13-45", "1763000000", "NaT")
CUSTOMER_POOL = (1, 2, 3, 4, 5, 0, -1, INT64_MAX, INT64_MIN)
EXTREME_INTS = (INT64_MIN, INT64_MAX, 0, -1, 1, 2, 5, 6, 99)
EXTREME_FLOATS = (
    math.nan,
    math.inf,
    -math.inf,
    1e308,
    -1e308,
    5e-324,
    0.0,
    -0.0,
    -5.0,
    12.5,
)
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Draw = Callable[[st.SearchStrategy[Any]], Any]


@dataclass
class Filler:
    """Values for one example: a seeded generator around an anchor instant."""

    rng: random.Random
    anchor: datetime
    null_share: float = 0.0

    def null(self) -> bool:
        return self.rng.random() < self.null_share

    def text(self, common: tuple[str, ...] = ()) -> str | None:
        if self.null():
            return None
        roll = self.rng.random()
        if common and roll < 0.6:
            return self.rng.choice(common)
        if roll < 0.8:
            return self.rng.choice(ODD_TEXT)
        length = self.rng.randint(0, 10)
        return "".join(self._character() for _ in range(length))

    def _character(self) -> str:
        code = self.rng.randint(1, 0x10FFFF)
        return chr(code) if not 0xD800 <= code <= 0xDFFF else "?"

    def integer(self, small: tuple[int, ...]) -> int | None:
        if self.null():
            return None
        roll = self.rng.random()
        if roll < 0.7:
            return self.rng.choice(small)
        if roll < 0.9:
            return self.rng.choice(EXTREME_INTS)
        return self.rng.randint(INT64_MIN, INT64_MAX)

    def amount(self) -> float | None:
        if self.null():
            return None
        if self.rng.random() < 0.5:
            return self.rng.choice(EXTREME_FLOATS)
        return self.rng.uniform(-1e6, 1e6)

    def boolean(self) -> bool | None:
        return None if self.null() else self.rng.random() < 0.5

    def instant(self) -> datetime | None:
        if self.null():
            return None
        if self.rng.random() < NEAR_SHARE:
            seconds = self.rng.uniform(-NEAR_DAYS, NEAR_DAYS / 4) * 86_400
            moment = self.anchor + timedelta(seconds=seconds)
        else:
            span = (LATEST - EARLIEST).total_seconds()
            moment = EARLIEST + timedelta(seconds=self.rng.uniform(0, span))
        moment = min(max(moment, EARLIEST), LATEST)
        offset = timezone(timedelta(minutes=self.rng.randint(-14 * 60, 14 * 60)))
        return moment.astimezone(offset)


def _iso_text(moment: datetime, style: int) -> str:
    """One of the ISO 8601 spellings a warehouse loader might have written."""
    match style:
        case 0:
            return moment.isoformat()
        case 1:
            return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        case 2:
            return moment.strftime("%Y-%m-%d %H:%M:%S")
        case 3:
            return moment.strftime("%Y-%m-%d %H:%M")
        case 4:
            return moment.strftime("%Y-%m-%d")
        case _:
            return moment.strftime("%Y-%m-%d %H:%M:%S.%f%z")


def _timestamps(draw: Draw, fill: Filler, name: str, n: int) -> pl.Series:
    """A timestamp column in one of the forms the warehouse layer accepts (or garbage text)."""
    moments = [fill.instant() for _ in range(n)]
    utc = [None if m is None else m.astimezone(UTC) for m in moments]
    form = draw(st.sampled_from(["utc", "naive", "zone", "text"]))
    if form == "utc":
        return pl.Series(name, utc, dtype=pl.Datetime("us", "UTC"))
    if form == "naive":
        naive = [None if m is None else m.replace(tzinfo=None) for m in utc]
        return pl.Series(name, naive, dtype=pl.Datetime("us"))
    if form == "zone":
        zone = draw(st.sampled_from(ZONES))
        return pl.Series(name, utc, dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(zone)
    garbage = draw(st.sampled_from(GARBAGE_SHARES))
    texts: list[str | None] = []
    for moment in moments:
        if moment is None:
            texts.append(None)
        elif fill.rng.random() < garbage:
            texts.append(fill.rng.choice(GARBAGE_TIMES))
        else:
            texts.append(_iso_text(moment, fill.rng.randint(0, 5)))
    return pl.Series(name, texts, dtype=pl.String)


@st.composite
def source_frame(draw: Draw, table: str, anchor: datetime) -> pl.DataFrame:
    """A random frame with the columns of one source table."""
    n = draw(st.integers(0, 50))
    fill = Filler(rng=draw(st.randoms(use_true_random=True)), anchor=anchor)
    columns: list[pl.Series] = []
    for name, dtype in contract_schema(table).items():
        fill.null_share = draw(st.sampled_from(NULL_SHARES))
        if isinstance(dtype, pl.Datetime):
            columns.append(_timestamps(draw, fill, name, n))
            continue
        values: list[Any]
        if name == "customer_id":
            values = [fill.integer(CUSTOMER_POOL) for _ in range(n)]
        elif name == "interaction_id":
            values = [fill.integer((1, 2, 3, 4, 5, 6, 7, 8)) for _ in range(n)]
        elif dtype == pl.Int64:
            values = [fill.integer((-1, 0, 1, 2, 3, 4, 5, 6)) for _ in range(n)]
        elif dtype == pl.Float64:
            values = [fill.amount() for _ in range(n)]
        elif dtype == pl.Boolean:
            values = [fill.boolean() for _ in range(n)]
        else:
            common = {"channel": CHANNELS, "kind": KINDS, "event_type": EVENT_TYPES}.get(name, ())
            values = [fill.text(common) for _ in range(n)]
        columns.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(columns)


AS_OF = st.builds(
    lambda seconds, minutes: (
        datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    ).astimezone(timezone(timedelta(minutes=minutes))),
    st.integers(0, 100 * 365 * 86_400),
    st.integers(-14 * 60, 14 * 60),
)
KNOWN_CHANNELS = st.lists(st.sampled_from(CHANNELS + ODD_TEXT), max_size=6)


@st.composite
def source_frames(draw: Draw, as_of: datetime) -> dict[str, pl.DataFrame]:
    """One random frame per source table, its timestamps clustered around ``as_of``."""
    return {table: draw(source_frame(table, as_of)) for table in SOURCE_TABLES}


def _source_data(frames: dict[str, pl.DataFrame]) -> SourceData | None:
    """The frames conformed to the contract, or None when conversion refuses them clearly."""
    try:
        return SourceData.from_frames(frames)
    except ValueError as error:
        assert any(str(error).startswith(f"{table}.") for table in SOURCE_TABLES), error
        event("refused while conforming to the contract")
        return None


def _validated(
    data: SourceData, as_of: datetime, known_channels: list[str]
) -> tuple[SourceData, QualityReport] | None:
    """Validation's result, or None when it refused the data with a ValueError naming a table."""
    try:
        return validate(data, as_of=as_of, known_channels=known_channels)
    except ValueError as error:
        assert any(table in str(error) for table in SOURCE_TABLES), error
        event("refused by validation")
        return None


def _check_report(data: SourceData, clean: SourceData, report: QualityReport) -> None:
    assert report.rows_read == data.row_counts()
    assert report.rows_kept == clean.row_counts()
    for table in SOURCE_TABLES:
        quarantined = sum(report.quarantined[table].values())
        assert report.rows_kept[table] + quarantined == report.rows_read[table], table
        assert all(n > 0 for n in report.quarantined[table].values())
        assert all(n > 0 for n in report.normalised[table].values())
    assert report.n_quarantined == sum(sum(r.values()) for r in report.quarantined.values())
    json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert len(report.summary_lines()) == len(SOURCE_TABLES)


def _check_clean(clean: SourceData, as_of: datetime, known_channels: list[str]) -> None:
    customers = set(clean.customers["customer_id"].to_list())
    assert clean.customers["customer_id"].n_unique() == clean.customers.height
    for table, frame in clean.frames().items():
        assert frame.schema == contract_schema(table), table
        for column in required_not_null(table):
            assert frame[column].null_count() == 0, f"{table}.{column}"
        assert (frame[EVENT_TIME[table]] <= as_of.astimezone(UTC)).all(), table
        if table != "customers":
            assert set(frame["customer_id"].to_list()) <= customers, table
        for name, dtype in frame.schema.items():
            if dtype.is_float():
                assert frame[name].drop_nulls().is_finite().all(), f"{table}.{name}"
    assert (clean.customers["monthly_value"].drop_nulls() >= 0).all()
    interactions = clean.interactions
    assert interactions["interaction_id"].n_unique() == interactions.height
    opened = interactions["opened_at"]
    for column in ("first_response_at", "resolved_at"):
        later = interactions[column]
        assert (later.is_null() | (later >= opened)).all(), column
    assert (interactions["transfers"] >= 0).all()
    assert interactions["csat"].drop_nulls().is_between(1, 5).all()
    allowed = {c.strip().lower() for c in known_channels} | {OTHER_CHANNEL}
    assert set(interactions["channel"].to_list()) <= allowed
    ended, started = clean.subscriptions["ended_at"], clean.subscriptions["started_at"]
    assert (ended.is_null() | (ended >= started)).all()


def _check_features(clean: SourceData, snapshot: date, cap: int) -> None:
    event_types = discover_event_types(clean.activity.lazy(), cap)
    features = build_features(clean.lazy(), [snapshot], FeatureConfig(), event_types).collect()
    event("feature rows", "some" if features.height else "none")
    assert features.columns[:2] == ["snapshot_date", "customer_id"]
    assert set(feature_columns(event_types)) <= set(features.columns)
    assert not features.select("snapshot_date", "customer_id").is_duplicated().any()
    assert set(features["customer_id"].to_list()) <= set(clean.customers["customer_id"].to_list())


@FUZZ
@given(
    data=st.data(),
    as_of=AS_OF,
    known_channels=KNOWN_CHANNELS,
    snapshot_shift=st.integers(-30, 60),
    cap=st.integers(0, 4),
)
def test_validation_is_consistent_or_names_a_table_and_features_build_on_the_rest(
    data: st.DataObject,
    as_of: datetime,
    known_channels: list[str],
    snapshot_shift: int,
    cap: int,
) -> None:
    sources = _source_data(data.draw(source_frames(as_of), label="frames"))
    if sources is None:
        return
    result = _validated(sources, as_of, known_channels)
    if result is None:
        return
    clean, report = result
    event("validated", "with rows kept" if sum(report.rows_kept.values()) else "nothing kept")
    event("quarantined rows", "some" if report.n_quarantined else "none")
    _check_report(sources, clean, report)
    _check_clean(clean, as_of, known_channels)
    _check_features(clean, as_of.astimezone(UTC).date() + timedelta(days=snapshot_shift), cap)


@pytest.mark.parametrize("garbage", ["yesterday", "01/11/2026", "2026-13-45"])
def test_unparseable_text_timestamps_name_the_table_and_column(garbage: str) -> None:
    frame = pl.DataFrame({"customer_id": [1, 2], "signup_at": ["2026-01-01", garbage]})
    with pytest.raises(ValueError, match=r"^customers\.signup_at: 1 of 2 rows"):
        SourceData.from_frames({"customers": frame})
