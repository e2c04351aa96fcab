"""The bad-input catalog: malformed warehouses, each made from a healthy one with real SQL.

Every :class:`Case` damages a copy of the base warehouse (see ``conftest.py``) with
``ALTER TABLE``, ``UPDATE``, ``INSERT`` and ``DROP`` statements, then says how the nightly
job (:func:`flows.nightly.score_day` for today) must end:

- :class:`Fails`: a specific exception whose message names the table and column (and the
  row count where there is one); the run is recorded as failed in ``scoring_runs`` and the
  previous list stays untouched;
- :class:`Succeeds`: the run succeeds, ``scoring_runs.data_quality`` holds exactly the
  quarantine and normalisation counts given (nothing else), ``n_quarantined`` is their sum
  and the day's list is the new run's.

Inserted rows belong to customers the base run scored (``Site.customers``), and their
times are placed relative to today's cutoff, so the expected counts do not depend on the
demo data. ``docs/data-contract.md`` ("Bad input catalog") lists the same cases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa

from flows.nightly import RunResult
from models.drift import DriftStop
from models.nightly import (
    NoActiveCustomersError,
    extract_sources,
    scoring_features,
    scoring_window,
    validate_sources,
)
from models.registry import load_model
from warehouse.contract import ContractError
from warehouse.extract import SourceData
from warehouse.io import UnreadableValuesError
from warehouse.outputs import read_retention_list
from warehouse.schema import Warehouse, contract_table
from warehouse.settings import Settings
from warehouse.validate import NoCustomersError

SQLITE = "sqlite"
POSTGRES = "postgres"
BOTH = (SQLITE, POSTGRES)

RELAXED_DRIFT: Mapping[str, Any] = {"drift_warn_psi": 1e9, "drift_stop_psi": 1e9}
"""Settings that keep the drift guard from stopping a run whose features moved on purpose."""

MILLION = 1_000_000
ORPHAN_CUSTOMER = 999_999_999


# --------------------------------------------------------------------------------------------
# Damaging a copy
# --------------------------------------------------------------------------------------------


@dataclass
class Site:
    """A copy being damaged: its connection, its tables and anchors in time."""

    conn: sa.Connection
    backend: str
    wh: Warehouse
    as_of: date
    cutoff: datetime
    customers: tuple[int, ...]
    """Customers the base run scored (and did not cool down), by id."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What a case's check needs to know about the damage."""
    _next_interaction: int | None = None

    def name(self, logical: str) -> str:
        """The quoted, configured name of a source table."""
        return self.conn.dialect.identifier_preparer.format_table(self.wh[logical])

    def execute(self, statement: str, **params: Any) -> sa.CursorResult[Any]:
        """Run SQL with bound parameters; ``{interactions}`` etc. become table names."""
        names = {logical: self.name(logical) for logical in self.wh.sources}
        return self.conn.execute(sa.text(statement.format(**names)), params)

    def insert(self, logical: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert rows (text timestamps as given) through bound parameters."""
        columns = list(rows[0])
        preparer = self.conn.dialect.identifier_preparer
        names = ", ".join(preparer.quote(c) for c in columns)
        values = ", ".join(f":{c}" for c in columns)
        statement = f"INSERT INTO {self.name(logical)} ({names}) VALUES ({values})"
        self.conn.execute(sa.text(statement), [dict(row) for row in rows])

    def loosen(self, logical: str) -> None:
        """Drop the primary key and every NOT NULL of a table, keeping its rows."""
        table = self.name(logical)
        if self.backend == POSTGRES:
            self.execute(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {logical}_pkey")
            for column in contract_table(logical).columns:
                self.execute(f"ALTER TABLE {table} ALTER COLUMN {column.name} DROP NOT NULL")
            return
        self.execute(f"CREATE TABLE {logical}_loose AS SELECT * FROM {table}")
        self.execute(f"DROP TABLE {table}")
        self.execute(f"ALTER TABLE {logical}_loose RENAME TO {logical}")

    def as_text(self, logical: str, column: str) -> None:
        """Make a column text (PostgreSQL); SQLite keeps every timestamp as text already."""
        if self.backend == POSTGRES:
            self.execute(f"ALTER TABLE {self.name(logical)} ALTER COLUMN {column} TYPE text")

    def before_cutoff(self, days: float, hours: float = 0) -> datetime:
        """The instant ``days`` and ``hours`` before today's cutoff (UTC)."""
        return self.cutoff - timedelta(days=days, hours=hours)

    def interaction_id(self) -> int:
        """An interaction id not used yet."""
        if self._next_interaction is None:
            top = self.execute("SELECT max(interaction_id) FROM {interactions}").scalar()
            self._next_interaction = int(top or 0) + 1
        self._next_interaction += 1
        return self._next_interaction - 1

    def interaction(self, opened_at: object, **values: Any) -> dict[str, Any]:
        """An interaction of the first scored customer with sane defaults."""
        row: dict[str, Any] = {
            "interaction_id": self.interaction_id(),
            "customer_id": self.customers[0],
            "opened_at": opened_at,
            "channel": "phone",
            "kind": "query",
            "is_public": False,
            "first_response_at": None,
            "resolved_at": None,
            "transfers": 0,
            "reopened": False,
            "csat": None,
        }
        row.update(values)
        return row


def stamp(moment: datetime) -> str:
    """ISO 8601 text with an explicit UTC offset: both backends read it as that instant."""
    return moment.astimezone(UTC).isoformat(sep=" ")


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fails:
    """The run raises exactly ``error``, its message matching ``message`` (a regex)."""

    error: type[BaseException]
    message: str
    quality_recorded: bool = False
    """Whether validation had finished, so the failed run records ``data_quality``."""
    rows_read: Mapping[str, int] = field(default_factory=dict)
    """When quality is recorded: rows read per table, exactly."""


@dataclass(frozen=True)
class Succeeds:
    """The run succeeds with exactly these counts in ``scoring_runs.data_quality``."""

    quarantined: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    normalised: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    rows_read_delta: Mapping[str, int] = field(default_factory=dict)
    """Rows read beyond the base run's, per table (tables not named: the same)."""
    rows_read: Mapping[str, int | None] = field(default_factory=dict)
    """Rows read per table, exactly (overrides ``rows_read_delta``; None: not compared)."""
    scored_delta: int | None = 0
    """Customers scored beyond the base run's (None: not compared)."""


@dataclass(frozen=True)
class Ran:
    """What a case's extra check gets: the damaged copy after the run."""

    settings: Settings
    engine: sa.Engine
    wh: Warehouse
    as_of: date
    notes: Mapping[str, Any]
    result: RunResult | None

    def sources(self) -> SourceData:
        """The source tables as today's run extracts them (before validation)."""
        return extract_sources(self.engine, self.wh, scoring_window(self.settings, self.as_of))

    def features(self) -> pl.DataFrame:
        """Today's features of every scored customer, computed as the run does."""
        window = scoring_window(self.settings, self.as_of)
        clean, _ = validate_sources(self.settings, self.sources(), window)
        champion = load_model(self.engine, self.wh)
        return scoring_features(self.settings, clean, champion, self.as_of)

    def full_list(self) -> pl.DataFrame:
        """Today's list, every scored customer."""
        return read_retention_list(self.engine, self.wh, as_of=self.as_of, listed_only=False)


@dataclass(frozen=True)
class Case:
    """One malformed warehouse: how it is made, on which backends, and how the run ends."""

    name: str
    what: str
    backends: tuple[str, ...]
    damage: Callable[[Site], None]
    expect: Fails | Succeeds
    settings: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[Ran], None] | None = None
    why_backends: str = ""


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


def drop_activity(site: Site) -> None:
    site.execute("DROP TABLE {activity}")


def drop_csat(site: Site) -> None:
    site.execute("ALTER TABLE {interactions} DROP COLUMN csat")


def opened_at_as_epoch_numbers(site: Site) -> None:
    site.execute(
        "ALTER TABLE {interactions} ALTER COLUMN opened_at TYPE bigint "
        "USING extract(epoch FROM opened_at)::bigint"
    )


def text_timestamps_in_odd_formats(site: Site) -> None:
    site.as_text("interactions", "opened_at")
    day = site.before_cutoff(days=5).date().isoformat()
    nine_thirty = datetime.fromisoformat(f"{day}T09:30:00+00:00")
    forms = {
        f"{day}T09:30:00Z": nine_thirty,
        f"{day} 09:30": nine_thirty,
        f"{day}": nine_thirty.replace(hour=0, minute=0),
        f"{day}T15:00:00+05:30": nine_thirty,
        f"{day} 04:30:00-0500": nine_thirty,
        f"  {day} 09:30:00.250000  ": nine_thirty + timedelta(milliseconds=250),
    }
    rows = [site.interaction(text) for text in forms]
    site.insert("interactions", rows)
    site.notes["opened_at"] = {
        row["interaction_id"]: instant for row, instant in zip(rows, forms.values(), strict=True)
    }


def check_opened_at(ran: Ran) -> None:
    expected: dict[int, datetime] = ran.notes["opened_at"]
    frame = ran.sources().interactions.filter(pl.col("interaction_id").is_in(list(expected)))
    assert dict(frame.select("interaction_id", "opened_at").iter_rows()) == expected


def text_timestamps_unparseable(site: Site) -> None:
    site.as_text("interactions", "opened_at")
    epoch: object = 1_763_000_000 if site.backend == SQLITE else "1763000000"
    site.insert(
        "interactions",
        [site.interaction("yesterday"), site.interaction("01/11/2026"), site.interaction(epoch)],
    )


def naive_and_aware_mixed(site: Site) -> None:
    day = site.before_cutoff(days=3).date().isoformat()
    nine_thirty = datetime.fromisoformat(f"{day}T09:30:00+00:00")
    if site.backend == POSTGRES:
        site.execute(
            "ALTER TABLE {interactions} ALTER COLUMN opened_at TYPE timestamp "
            "USING opened_at AT TIME ZONE 'UTC'"
        )
        forms = {
            f"{day} 09:30:00": nine_thirty,
            f"{day} 09:30": nine_thirty,
            f"{day}T09:30:00.000000": nine_thirty,
            f"{day}": nine_thirty.replace(hour=0, minute=0),
            f"{day} 23:59:59.999999": datetime.fromisoformat(f"{day}T23:59:59.999999+00:00"),
        }
    else:
        cutoff_day = site.cutoff.date().isoformat()
        forms = {
            f"{day} 09:30:00": nine_thirty,
            f"{day}T09:30:00Z": nine_thirty,
            f"{day}T11:30:00+02:00": nine_thirty,
            f"{day}T04:30:00-05:00": nine_thirty,
            # Today 03:00 at +05:00 is yesterday 22:00 UTC, before the cutoff.
            f"{cutoff_day}T03:00:00+05:00": site.before_cutoff(days=0, hours=2),
        }
    rows = [site.interaction(text) for text in forms]
    site.insert("interactions", rows)
    site.notes["opened_at"] = {
        row["interaction_id"]: instant for row, instant in zip(rows, forms.values(), strict=True)
    }


def transfers_as_words(site: Site) -> None:
    if site.backend == POSTGRES:
        site.execute("ALTER TABLE {interactions} ALTER COLUMN transfers TYPE text")
    site.insert("interactions", [site.interaction(stamp(site.before_cutoff(2)), transfers="three")])


def convertible_types(site: Site) -> None:
    if site.backend == POSTGRES:
        site.execute(
            "ALTER TABLE {interactions} ALTER COLUMN is_public TYPE text "
            "USING CASE WHEN is_public THEN 'yes' ELSE 'no' END"
        )
        site.execute("ALTER TABLE {interactions} ALTER COLUMN transfers TYPE text")
        site.execute("ALTER TABLE {interactions} ALTER COLUMN csat TYPE numeric(4, 1)")
        site.execute("ALTER TABLE {customers} ALTER COLUMN monthly_value TYPE numeric(12, 2)")
        row = site.interaction(
            stamp(site.before_cutoff(4)), is_public=" Yes ", transfers=" 2 ", csat=4, reopened=True
        )
    else:
        row = site.interaction(
            stamp(site.before_cutoff(4)), is_public="yes", reopened="TRUE", transfers=2, csat=4
        )
    site.insert("interactions", [row])
    site.notes["row"] = row["interaction_id"]


def check_coerced_row(ran: Ran) -> None:
    frame = ran.sources().interactions.filter(pl.col("interaction_id") == ran.notes["row"])
    assert frame.select("is_public", "reopened", "transfers", "csat").row(0) == (True, True, 2, 4)


def delete_all(logical: str) -> Callable[[Site], None]:
    def damage(site: Site) -> None:
        site.execute(f"DELETE FROM {{{logical}}}")

    damage.__name__ = f"delete_all_{logical}"
    return damage


def signups_in_the_far_future(site: Site) -> None:
    site.execute("UPDATE {customers} SET signup_at = :far", far="9999-01-01 00:00:00+00:00")


def check_no_interaction_features(ran: Ran) -> None:
    features = ran.features()
    assert ran.result is not None and features.height == ran.result.counts["scored"]
    for name in ("contacts_90d", "complaints_90d", "unanswered_contacts_90d", "open_complaints"):
        assert features[name].fill_null(0).eq(0).all(), name


def check_no_activity_features(ran: Ran) -> None:
    features = ran.features()
    assert features["activity_events_90d"].fill_null(0).eq(0).all()


def check_nobody_cooled_down(ran: Ran) -> None:
    assert ran.result is not None and ran.result.counts["cooled_down"] == 0
    assert not ran.full_list()["cooled_down"].any()


def null_every_optional_column(site: Site) -> None:
    for logical in ("customers", "subscriptions", "interactions", "activity", "retention_contacts"):
        optional = [c.name for c in contract_table(logical).columns if c.nullable]
        assignments = ", ".join(f"{name} = NULL" for name in optional)
        site.execute(f"UPDATE {{{logical}}} SET {assignments}")


def check_no_value_known(ran: Ran) -> None:
    rows = ran.full_list()
    assert rows.height > 0
    assert rows["customer_value"].eq(0).all()
    assert rows["segment"].is_null().all()


def one_customer_with_a_million_interactions(site: Site) -> None:
    site.notes["customer"] = site.customers[0]
    first = site.interaction_id()
    site.execute(
        "INSERT INTO {interactions} (interaction_id, customer_id, opened_at, channel, kind, "
        "is_public, first_response_at, resolved_at, transfers, reopened, csat) "
        "SELECT :first + g, :customer, CAST(:start AS timestamptz) + g * interval '2 seconds', "
        "'chat', 'query', false, NULL, NULL, 0, false, NULL "
        "FROM generate_series(0, :last) AS g",
        first=first,
        customer=site.customers[0],
        start=stamp(site.before_cutoff(40)),
        last=MILLION - 1,
    )


def check_heavy_customer_scored(ran: Ran) -> None:
    customers = ran.full_list()["customer_id"].to_list()
    assert ran.notes["customer"] in customers


def duplicate_keys(site: Site) -> None:
    site.loosen("customers")
    site.loosen("interactions")
    customers = site.execute(
        "SELECT * FROM {customers} WHERE customer_id IN (:a, :b, :c)",
        a=site.customers[0],
        b=site.customers[1],
        c=site.customers[2],
    ).mappings()
    copies = [
        dict(row, signup_at=stamp(_instant(row["signup_at"]) + timedelta(days=1)))
        for row in customers
    ]
    site.insert("customers", copies)
    interactions = site.execute(
        "SELECT * FROM {interactions} WHERE opened_at >= :start AND opened_at < :end "
        "ORDER BY interaction_id LIMIT 4",
        start=stamp(site.before_cutoff(60)),
        end=stamp(site.before_cutoff(30)),
    ).mappings()
    later = [
        dict(row, opened_at=stamp(_instant(row["opened_at"]) + timedelta(hours=1)))
        for row in interactions
    ]
    site.insert("interactions", [{k: _plain(v) for k, v in row.items()} for row in later])


def _instant(value: object) -> datetime:
    """A timestamp as either backend returns it through SQLAlchemy's text queries."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plain(value: object) -> object:
    return stamp(value) if isinstance(value, datetime) else value


def latin1_text(site: Site) -> None:
    site.execute(
        "UPDATE {customers} SET segment = CAST(x'636166e9' AS TEXT) WHERE customer_id IN (:a, :b)",
        a=site.customers[0],
        b=site.customers[1],
    )


def text_as_blobs(site: Site) -> None:
    site.insert(
        "interactions",
        [site.interaction(stamp(site.before_cutoff(3)), channel=b"phone", kind=b"complaint")],
    )
    site.insert(
        "activity",
        [
            {
                "customer_id": site.customers[0],
                "occurred_at": stamp(site.before_cutoff(2)),
                "event_type": b"login",
                "value": None,
            }
        ],
    )


def invalid_utf8_blob(site: Site) -> None:
    site.insert(
        "activity",
        [
            {
                "customer_id": site.customers[0],
                "occurred_at": stamp(site.before_cutoff(2)),
                "event_type": b"log\xffin",
                "value": None,
            }
        ],
    )


def dates_far_future_and_past(site: Site) -> None:
    far_future = "9999-12-31 00:00:00+00:00"
    customer = site.customers[0]
    site.insert(
        "interactions",
        [
            site.interaction(far_future),
            site.interaction(far_future, kind="complaint"),
            site.interaction(
                stamp(site.before_cutoff(6)), first_response_at=far_future, resolved_at=far_future
            ),
        ],
    )
    site.insert(
        "activity",
        [
            {"customer_id": customer, "occurred_at": when, "event_type": "login", "value": None}
            for when in (
                "1900-01-01 00:00:00+00:00",
                "1970-01-01 00:00:00+00:00",
                "1969-12-31 23:59:59+00:00",
            )
        ],
    )
    site.insert(
        "subscriptions",
        [{"customer_id": customer, "started_at": "9999-01-01 00:00:00+00:00", "ended_at": None}],
    )
    site.insert("retention_contacts", [{"customer_id": customer, "contacted_at": far_future}])
    site.insert(
        "customers", [{"customer_id": ORPHAN_CUSTOMER, "signup_at": "1900-01-01 00:00:00+00:00"}]
    )


def postgres_infinity(site: Site) -> None:
    site.execute("UPDATE {subscriptions} SET ended_at = 'infinity' WHERE ended_at IS NULL")
    site.insert(
        "customers",
        [{"customer_id": ORPHAN_CUSTOMER + n, "signup_at": "-infinity"} for n in range(2)],
    )
    site.insert(
        "interactions",
        [
            site.interaction(
                stamp(site.before_cutoff(8)), first_response_at="infinity", resolved_at="infinity"
            )
        ],
    )


def absurd_values(site: Site) -> None:
    when = stamp(site.before_cutoff(9))
    site.insert(
        "interactions",
        [site.interaction(when, transfers=-1) for _ in range(2)]
        + [site.interaction(when, csat=99) for _ in range(3)],
    )
    site.execute(
        "UPDATE {customers} SET monthly_value = -5 WHERE customer_id IN (:a, :b)",
        a=site.customers[1],
        b=site.customers[2],
    )
    site.execute(
        "UPDATE {customers} SET monthly_value = 1e308 WHERE customer_id = :c", c=site.customers[0]
    )
    infinite = "'Infinity'" if site.backend == POSTGRES else "9e999"
    negative_infinite = "'-Infinity'" if site.backend == POSTGRES else "-9e999"
    site.insert(
        "subscriptions",
        [{"customer_id": site.customers[3], "started_at": when, "ended_at": None, "mrr": 1.0}],
    )
    site.execute(
        f"UPDATE {{subscriptions}} SET mrr = {infinite} WHERE customer_id = :c AND mrr = 1.0",
        c=site.customers[3],
    )
    order = {"customer_id": site.customers[0], "occurred_at": when, "event_type": "order"}
    # Two events of 1e308 would sum to infinity in the customer's features.
    site.insert("activity", [dict(order, value=v) for v in (1.0, 1.0, 1e308, 1e308)])
    site.execute(
        f"UPDATE {{activity}} SET value = {negative_infinite} "
        "WHERE customer_id = :c AND value = 1.0",
        c=site.customers[0],
    )
    site.notes["customer"] = site.customers[0]


def check_no_absurd_amount_reaches_the_list(ran: Ran) -> None:
    rows = ran.full_list()
    assert rows["value_at_risk"].is_finite().all()
    assert rows["customer_value"].abs().max() <= 1e15  # type: ignore[operator]
    customer = rows.filter(pl.col("customer_id") == ran.notes["customer"])
    assert customer.height == 1


def null_ids_and_required_values(site: Site) -> None:
    site.loosen("interactions")
    site.loosen("activity")
    when = stamp(site.before_cutoff(12))
    site.insert(
        "interactions",
        [
            site.interaction(when, interaction_id=None),
            site.interaction(when, customer_id=None),
            site.interaction(None),
            site.interaction(when, channel=None),
            site.interaction(when, is_public=None),
        ],
    )
    activity = {"customer_id": site.customers[0], "occurred_at": when, "event_type": "login"}
    site.insert(
        "activity",
        [
            dict(activity, customer_id=None),
            dict(activity, customer_id=None),
            dict(activity, event_type=None),
        ],
    )


def orphan_customer_ids(site: Site) -> None:
    when = stamp(site.before_cutoff(15))
    orphan = {"customer_id": ORPHAN_CUSTOMER}
    site.insert("subscriptions", [dict(orphan, started_at=when, ended_at=None)])
    site.insert(
        "interactions", [site.interaction(when, customer_id=ORPHAN_CUSTOMER) for _ in range(2)]
    )
    site.insert("activity", [dict(orphan, occurred_at=when, event_type="login")] * 3)
    site.insert("retention_contacts", [dict(orphan, contacted_at=when)])


def contradictory_rows(site: Site) -> None:
    opened = site.before_cutoff(20)
    site.insert(
        "interactions",
        [
            site.interaction(stamp(opened), first_response_at=stamp(opened - timedelta(hours=1))),
            site.interaction(stamp(opened), resolved_at=stamp(opened - timedelta(minutes=1))),
            site.interaction(stamp(opened), channel=" Twitter "),
            site.interaction(stamp(opened), channel="fax"),
        ],
    )
    site.insert(
        "subscriptions",
        [
            {
                "customer_id": site.customers[0],
                "started_at": stamp(site.before_cutoff(10)),
                "ended_at": stamp(site.before_cutoff(20)),
            }
        ],
    )


CATALOG: tuple[Case, ...] = (
    Case(
        "missing_table",
        "DROP TABLE activity",
        BOTH,
        drop_activity,
        Fails(ContractError, r"missing table 'activity' \(contract table 'activity'\)"),
    ),
    Case(
        "missing_column",
        "ALTER TABLE interactions DROP COLUMN csat",
        BOTH,
        drop_csat,
        Fails(
            ContractError,
            r"table 'interactions' \(contract table 'interactions'\) has no column 'csat'",
        ),
    ),
    Case(
        "timestamp_column_of_numbers",
        "interactions.opened_at made bigint (epoch seconds)",
        (POSTGRES,),
        opened_at_as_epoch_numbers,
        Fails(ContractError, r"'interactions'\) column 'opened_at' has type BIGINT"),
        why_backends="SQLite declares no real types; epoch numbers in a SQLite column are "
        "the unparseable_text_timestamps case",
    ),
    Case(
        "text_timestamps",
        "opened_at as text in odd but ISO 8601 forms: T/space, Z, no seconds, bare date, "
        "+05:30, -0500, padded with spaces",
        BOTH,
        text_timestamps_in_odd_formats,
        Succeeds(rows_read_delta={"interactions": 6}),
        check=check_opened_at,
        why_backends="PostgreSQL: ALTER COLUMN opened_at TYPE text first",
    ),
    Case(
        "unparseable_text_timestamps",
        "opened_at 'yesterday', '01/11/2026' (sorts before the window) and epoch 1763000000",
        BOTH,
        text_timestamps_unparseable,
        Fails(
            UnreadableValuesError,
            r"^interactions\.opened_at: 3 of \d+ rows cannot be read as Datetime.*'yesterday'",
        ),
        why_backends="PostgreSQL: ALTER COLUMN opened_at TYPE text first",
    ),
    Case(
        "naive_and_aware_timestamps",
        "SQLite: one text column with naive, Z, +02:00 and -05:00 values; PostgreSQL: "
        "opened_at made timestamp without time zone",
        BOTH,
        naive_and_aware_mixed,
        Succeeds(rows_read_delta={"interactions": 5}),
        check=check_opened_at,
        why_backends="a PostgreSQL timestamp column is either naive or aware, never both",
    ),
    Case(
        "wrong_type",
        "interactions.transfers holds the text 'three'",
        BOTH,
        transfers_as_words,
        Fails(
            UnreadableValuesError,
            r"^interactions\.transfers: 1 of \d+ rows cannot be read as Int64 "
            r"\(for example 'three'\)",
        ),
        why_backends="PostgreSQL: ALTER COLUMN transfers TYPE text first",
    ),
    Case(
        "convertible_types",
        "booleans as 'yes'/'TRUE' text; PostgreSQL also transfers as text, csat and "
        "monthly_value as numeric",
        BOTH,
        convertible_types,
        Succeeds(rows_read_delta={"interactions": 1}),
        check=check_coerced_row,
    ),
    Case(
        "empty_customers",
        "DELETE FROM customers",
        BOTH,
        delete_all("customers"),
        Fails(NoCustomersError, r"^customers: no customer is left to score, it has no rows"),
    ),
    Case(
        "all_customers_quarantined",
        "every signup_at in the year 9999",
        BOTH,
        signups_in_the_far_future,
        Fails(
            NoCustomersError, r"^customers: .*all 1,500 rows were quarantined \(after_as_of 1,500\)"
        ),
    ),
    Case(
        "empty_subscriptions",
        "DELETE FROM subscriptions (nobody is active)",
        BOTH,
        delete_all("subscriptions"),
        Fails(
            NoActiveCustomersError,
            r"^nobody is active as of .* \(subscription: a subscription covering .*subscriptions 0",
            quality_recorded=True,
            rows_read={"subscriptions": 0},
        ),
    ),
    Case(
        "empty_interactions",
        "DELETE FROM interactions, default drift guard",
        BOTH,
        delete_all("interactions"),
        Fails(
            DriftStop,
            r"^drift stop: .*contacts_90d",
            quality_recorded=True,
            rows_read={"interactions": 0},
        ),
    ),
    Case(
        "empty_interactions_drift_relaxed",
        "DELETE FROM interactions, drift guard relaxed",
        BOTH,
        delete_all("interactions"),
        Succeeds(rows_read={"interactions": 0}),
        settings=RELAXED_DRIFT,
        check=check_no_interaction_features,
    ),
    Case(
        "empty_activity",
        "DELETE FROM activity, default drift guard",
        (SQLITE,),
        delete_all("activity"),
        Fails(
            DriftStop,
            r"^drift stop: .*days_since_last_activity",
            quality_recorded=True,
            rows_read={"activity": 0},
        ),
        why_backends="the drift guard does not depend on the backend; the relaxed case below "
        "reads the empty table on both",
    ),
    Case(
        "empty_activity_drift_relaxed",
        "DELETE FROM activity, drift guard relaxed",
        BOTH,
        delete_all("activity"),
        Succeeds(rows_read={"activity": 0}),
        settings=RELAXED_DRIFT,
        check=check_no_activity_features,
    ),
    Case(
        "empty_retention_contacts",
        "DELETE FROM retention_contacts",
        BOTH,
        delete_all("retention_contacts"),
        Succeeds(rows_read={"retention_contacts": 0}),
        check=check_nobody_cooled_down,
    ),
    Case(
        "all_null_optional_columns_default_guard",
        "every nullable column of every source table set to NULL, default drift guard",
        (SQLITE,),
        null_every_optional_column,
        Fails(DriftStop, r"^drift stop: .*segment", quality_recorded=True),
        why_backends="the drift guard does not depend on the backend; the relaxed case below "
        "runs on both",
    ),
    Case(
        "all_null_optional_columns",
        "every nullable column of every source table set to NULL (segment, monthly_value, "
        "csat, ended_at, ...), drift guard relaxed",
        BOTH,
        null_every_optional_column,
        # With ended_at and resolved_at gone, older subscriptions and every older complaint
        # are still open, so more of both are read.
        Succeeds(scored_delta=None, rows_read={"subscriptions": None, "interactions": None}),
        settings=RELAXED_DRIFT,
        check=check_no_value_known,
    ),
    Case(
        "one_customer_a_million_interactions",
        "1,000,000 interactions for one customer (INSERT ... generate_series)",
        (POSTGRES,),
        one_customer_with_a_million_interactions,
        Succeeds(rows_read_delta={"interactions": MILLION}),
        check=check_heavy_customer_scored,
        why_backends="the insert takes seconds with generate_series; SQLite adds nothing here",
    ),
    Case(
        "duplicate_keys",
        "primary keys dropped; 3 customers and 4 interactions repeated with later times",
        BOTH,
        duplicate_keys,
        Succeeds(
            quarantined={
                "customers": {"duplicate_customer_id": 3},
                "interactions": {"duplicate_interaction_id": 4},
            },
            rows_read_delta={"customers": 3, "interactions": 4},
        ),
    ),
    Case(
        "text_in_wrong_encoding",
        "customers.segment holds latin-1 bytes (CAST(x'636166e9' AS TEXT)) in 2 rows",
        (SQLITE,),
        latin1_text,
        Fails(
            UnreadableValuesError,
            r"^customers\.segment: 2 of 1500 rows cannot be read as String because they are "
            r"not valid UTF-8 text",
        ),
        why_backends="a UTF8 PostgreSQL database refuses such bytes on insert; the SQL_ASCII "
        "database test covers PostgreSQL",
    ),
    Case(
        "text_as_blobs",
        "channel, kind and event_type stored as BLOBs of valid UTF-8",
        (SQLITE,),
        text_as_blobs,
        Succeeds(rows_read_delta={"interactions": 1, "activity": 1}),
        why_backends="PostgreSQL text columns cannot hold bytea",
    ),
    Case(
        "invalid_utf8_blob",
        "activity.event_type stored as the BLOB x'6c6f67ff696e'",
        (SQLITE,),
        invalid_utf8_blob,
        Fails(
            UnreadableValuesError,
            r"^activity\.event_type: 1 of \d+ rows cannot be read as String because they are "
            r"not valid UTF-8 text",
        ),
        why_backends="PostgreSQL text columns cannot hold bytea",
    ),
    Case(
        "dates_far_future_and_past",
        "interactions, a subscription and a contact in 9999; activity in 1900 and around "
        "1970; a customer signed up in 1900; answers dated 9999",
        BOTH,
        dates_far_future_and_past,
        Succeeds(
            quarantined={
                "subscriptions": {"after_as_of": 1},
                "interactions": {"after_as_of": 2},
                "retention_contacts": {"after_as_of": 1},
            },
            rows_read_delta={
                "customers": 1,
                "subscriptions": 1,
                "interactions": 3,
                "retention_contacts": 1,
            },
        ),
    ),
    Case(
        "infinite_timestamps",
        "open subscriptions end at 'infinity'; 2 customers signed up at '-infinity'; an "
        "interaction answered and resolved at 'infinity'",
        (POSTGRES,),
        postgres_infinity,
        Succeeds(
            quarantined={"customers": {"null_required:signup_at": 2}},
            rows_read_delta={"customers": 2, "interactions": 1},
        ),
        why_backends="infinity is a PostgreSQL timestamp value",
    ),
    Case(
        "absurd_values",
        "transfers -1, csat 99, monthly_value -5 and 1e308, an infinite mrr and value, "
        "activity values of 1e308",
        BOTH,
        absurd_values,
        Succeeds(
            quarantined={"interactions": {"negative_transfers": 2}},
            normalised={
                "customers": {
                    "implausible_amount:monthly_value": 1,
                    "negative_monthly_value": 2,
                },
                "subscriptions": {"not_finite:mrr": 1},
                "interactions": {"csat_out_of_range": 3},
                "activity": {"not_finite:value": 2, "implausible_amount:value": 2},
            },
            rows_read_delta={"subscriptions": 1, "interactions": 5, "activity": 4},
        ),
        settings=RELAXED_DRIFT,
        check=check_no_absurd_amount_reaches_the_list,
    ),
    Case(
        "null_ids_and_required_values",
        "NOT NULL dropped; null interaction_id, customer_id, opened_at, channel, is_public, "
        "event_type",
        BOTH,
        null_ids_and_required_values,
        Succeeds(
            quarantined={
                "interactions": {
                    "null_id": 2,
                    "null_required:opened_at": 1,
                    "null_required:channel": 1,
                    "null_required:is_public": 1,
                },
                "activity": {"null_id": 2, "null_required:event_type": 1},
            },
            rows_read_delta={"interactions": 5, "activity": 3},
        ),
    ),
    Case(
        "orphan_customer_ids",
        f"rows of every table for customer {ORPHAN_CUSTOMER}, who does not exist",
        BOTH,
        orphan_customer_ids,
        Succeeds(
            quarantined={
                "subscriptions": {"unknown_customer": 1},
                "interactions": {"unknown_customer": 2},
                "activity": {"unknown_customer": 3},
                "retention_contacts": {"unknown_customer": 1},
            },
            rows_read_delta={
                "subscriptions": 1,
                "interactions": 2,
                "activity": 3,
                "retention_contacts": 1,
            },
        ),
    ),
    Case(
        "contradictory_rows",
        "an answer and a resolution before the contact, a subscription ending before it "
        "starts, channels ' Twitter ' and 'fax'",
        BOTH,
        contradictory_rows,
        Succeeds(
            quarantined={
                "subscriptions": {"subscription_end_before_start": 1},
                "interactions": {"response_before_open": 1, "resolved_before_open": 1},
            },
            normalised={"interactions": {"unknown_channel": 1}},
            rows_read_delta={"subscriptions": 1, "interactions": 4},
        ),
    ),
)
