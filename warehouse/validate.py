"""Data-quality rules for the source tables: quarantine bad rows, normalise fixable values.

Quarantine rules, checked in this order; a row failing several is counted once, under
the first:

==============================  ============================================================
``null_id``                     customer_id is null (any table) or interaction_id is null
``null_required:<column>``      a column the contract declares NOT NULL is null
``duplicate_customer_id``       customers: a repeated id (the earliest signup_at is kept)
``duplicate_interaction_id``    interactions: a repeated id (the earliest opened_at is kept)
``response_before_open``        interactions: first_response_at < opened_at
``resolved_before_open``        interactions: resolved_at < opened_at
``negative_transfers``          interactions: transfers < 0
``subscription_end_before_start``  subscriptions: ended_at < started_at
``after_as_of``                 the row's event time is later than ``as_of``
``unknown_customer``            customer_id is not among the kept customers
==============================  ============================================================

Normalisations on kept rows: ``channel`` and ``kind`` are trimmed and lower-cased;
``csat_out_of_range`` (csat outside 1..5) becomes null; ``unknown_channel`` (not in the
known channels, compared after trimming and lower-casing) becomes ``'other'``;
``not_finite:<column>`` (NaN or an infinite amount in ``monthly_value``, ``mrr`` or
``value``) becomes null; ``implausible_amount:<column>`` (a finite amount beyond
:data:`MAX_PLAUSIBLE_AMOUNT` either way) becomes null; ``negative_monthly_value`` becomes
null. An amount counts under the first of these three it fails.

A first_response_at or resolved_at later than ``as_of`` is not an error: at ``as_of``
that answer or resolution simply had not happened yet.

When no customer is kept (the table is empty, or every row is quarantined) while the other
tables have rows, every one of those rows would be an unknown customer and nothing could be
scored: :func:`validate` raises :class:`NoCustomersError` saying so, with the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl

from warehouse.extract import EVENT_TIME, SourceData
from warehouse.schema import SOURCE_TABLES, required_not_null

SAMPLE_ROWS = 20
"""Quarantined rows kept per table as examples in the report."""

OTHER_CHANNEL = "other"
"""What an unknown channel becomes."""

MAX_PLAUSIBLE_AMOUNT = 1e15
"""The largest amount (``monthly_value``, ``mrr``, an activity ``value``) taken as real.

A quadrillion is beyond any customer's monthly value or any single event in any currency;
larger finite values (1e308, say) are load errors. Kept, they would put garbage at the top
of the list by value at risk and, summed, overflow a customer's features to infinity, which
stops the whole run.
"""

_ROW = "__row"
_RULE = "__rule"
_RULE_DTYPE = pl.UInt8
_CSAT_RANGE = (1, 5)


class NoCustomersError(ValueError):
    """No customer row survives validation while other source tables have rows."""


@dataclass
class QualityReport:
    """What validation read, kept, quarantined and normalised, per table and rule."""

    rows_read: dict[str, int]
    rows_kept: dict[str, int]
    quarantined: dict[str, dict[str, int]]
    normalised: dict[str, dict[str, int]]
    samples: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def n_quarantined(self) -> int:
        """Rows quarantined over all tables and rules."""
        return sum(sum(rules.values()) for rules in self.quarantined.values())

    @property
    def n_normalised(self) -> int:
        """Values normalised over all tables and rules."""
        return sum(sum(rules.values()) for rules in self.normalised.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (without the sample rows)."""
        return {
            "rows_read": dict(self.rows_read),
            "rows_kept": dict(self.rows_kept),
            "quarantined": {table: dict(rules) for table, rules in self.quarantined.items()},
            "normalised": {table: dict(rules) for table, rules in self.normalised.items()},
            "n_quarantined": self.n_quarantined,
            "n_normalised": self.n_normalised,
        }

    def summary_lines(self) -> list[str]:
        """One readable line per table, e.g. for logs and run artifacts."""
        lines: list[str] = []
        for table, read in self.rows_read.items():
            line = f"{table}: {read:,} read, {self.rows_kept.get(table, 0):,} kept"
            for label, counts in (
                ("quarantined", self.quarantined.get(table, {})),
                ("normalised", self.normalised.get(table, {})),
            ):
                if counts:
                    detail = ", ".join(f"{rule} {n:,}" for rule, n in counts.items())
                    line += f"; {sum(counts.values()):,} {label} ({detail})"
            lines.append(line)
        return lines


def _flag(code: int, condition: pl.Expr) -> pl.Expr:
    """Set rule ``code`` on rows not yet flagged where ``condition`` holds.

    Rules are small integer codes (positions in :func:`rule_names`) while flagging, and
    named only in the report: a string per row would cost a string column per rule.
    """
    return (
        pl.when(pl.col(_RULE).is_null() & condition.fill_null(False))
        .then(pl.lit(code, dtype=_RULE_DTYPE))
        .otherwise(pl.col(_RULE))
        .alias(_RULE)
    )


def _flag_duplicates(frame: pl.LazyFrame, code: int, key: str, earliest: str) -> pl.LazyFrame:
    """Flag all but the first unflagged row per ``key`` (earliest ``earliest``, then row order)."""
    alive = pl.col(_RULE).is_null()
    first_of_key = pl.when(alive).then(pl.col(key)).is_first_distinct()
    return (
        frame.with_row_index(_ROW)
        .sort([earliest, _ROW], nulls_last=True)
        .with_columns(_flag(code, alive & ~first_of_key))
        .sort(_ROW)
        .drop(_ROW)
    )


def _required_columns(table: str) -> list[str]:
    return required_not_null(table)


def rule_names(table: str) -> list[str]:
    """The quarantine rules that apply to a source table, in the order they are checked."""
    id_columns = ["customer_id"] + (["interaction_id"] if table == "interactions" else [])
    names = ["null_id"]
    names += [f"null_required:{c}" for c in _required_columns(table) if c not in id_columns]
    names += {
        "customers": ["duplicate_customer_id"],
        "interactions": [
            "duplicate_interaction_id",
            "response_before_open",
            "resolved_before_open",
            "negative_transfers",
        ],
        "subscriptions": ["subscription_end_before_start"],
    }.get(table, [])
    names.append("after_as_of")
    if table != "customers":
        names.append("unknown_customer")
    return names


def _flag_rules(
    table: str, frame: pl.LazyFrame, as_of: datetime, known_customers: pl.Series | None
) -> pl.LazyFrame:
    """``frame`` with the code of the first failing rule per row (null: kept).

    The code is the rule's position in :func:`rule_names` ``(table)``.
    """
    code = {rule: position for position, rule in enumerate(rule_names(table))}
    lf = frame.with_columns(pl.lit(None, dtype=_RULE_DTYPE).alias(_RULE))
    id_columns = ["customer_id"] + (["interaction_id"] if table == "interactions" else [])
    lf = lf.with_columns(
        _flag(code["null_id"], pl.any_horizontal([pl.col(c).is_null() for c in id_columns]))
    )
    for column in _required_columns(table):
        if column not in id_columns:
            lf = lf.with_columns(_flag(code[f"null_required:{column}"], pl.col(column).is_null()))
    if table == "customers":
        lf = _flag_duplicates(lf, code["duplicate_customer_id"], "customer_id", "signup_at")
    if table == "interactions":
        opened = pl.col("opened_at")
        lf = _flag_duplicates(lf, code["duplicate_interaction_id"], "interaction_id", "opened_at")
        lf = lf.with_columns(
            _flag(code["response_before_open"], pl.col("first_response_at") < opened)
        )
        lf = lf.with_columns(_flag(code["resolved_before_open"], pl.col("resolved_at") < opened))
        lf = lf.with_columns(_flag(code["negative_transfers"], pl.col("transfers") < 0))
    if table == "subscriptions":
        lf = lf.with_columns(
            _flag(
                code["subscription_end_before_start"],
                pl.col("ended_at") < pl.col("started_at"),
            )
        )
    lf = lf.with_columns(_flag(code["after_as_of"], pl.col(EVENT_TIME[table]) > pl.lit(as_of)))
    if known_customers is not None:
        known = pl.col("customer_id").is_in(known_customers.implode())
        lf = lf.with_columns(_flag(code["unknown_customer"], ~known))
    return lf


def _normalise_interactions(
    kept: pl.DataFrame, known_channels: Sequence[str]
) -> tuple[pl.DataFrame, dict[str, int]]:
    known = sorted({c.strip().lower() for c in known_channels} | {OTHER_CHANNEL})
    channel = pl.col("channel").str.strip_chars().str.to_lowercase()
    csat = pl.col("csat")
    out_of_range = csat.is_not_null() & ((csat < _CSAT_RANGE[0]) | (csat > _CSAT_RANGE[1]))
    unknown = ~channel.is_in(pl.Series(known, dtype=pl.String).implode())
    flags = kept.select(
        out_of_range.sum().alias("csat_out_of_range"), unknown.sum().alias("unknown_channel")
    ).row(0, named=True)
    cleaned = kept.with_columns(
        pl.when(unknown).then(pl.lit(OTHER_CHANNEL)).otherwise(channel).alias("channel"),
        pl.col("kind").str.strip_chars().str.to_lowercase(),
        pl.when(out_of_range).then(None).otherwise(csat).alias("csat"),
    )
    counts = {rule: int(n) for rule, n in flags.items() if n}
    return cleaned, counts


def _normalise_amounts(table: str, kept: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """NaN, infinite and implausible amounts (and negative monthly values) become null, counted."""
    rules: list[tuple[str, str, pl.Expr]] = []
    for name, dtype in kept.schema.items():
        if not dtype.is_float():
            continue
        amount = pl.col(name)
        rules.append((f"not_finite:{name}", name, amount.is_not_null() & ~amount.is_finite()))
        implausible = amount.is_finite() & (amount.abs() > MAX_PLAUSIBLE_AMOUNT)
        rules.append((f"implausible_amount:{name}", name, implausible))
    if table == "customers":
        value = pl.col("monthly_value")
        plausible = value.abs() <= MAX_PLAUSIBLE_AMOUNT
        rules.append(("negative_monthly_value", "monthly_value", plausible & (value < 0)))
    if not rules:
        return kept, {}
    flags = kept.select(condition.sum().alias(rule) for rule, _, condition in rules)
    counts = {rule: int(n) for rule, n in flags.row(0, named=True).items() if n}
    if not counts:
        return kept, {}
    columns = dict.fromkeys(column for _, column, _ in rules)
    cleaned = kept.with_columns(
        pl.when(pl.any_horizontal(c for _, column, c in rules if column == name))
        .then(None)
        .otherwise(pl.col(name))
        .alias(name)
        for name in columns
    )
    return cleaned, counts


def _require_customers(report: QualityReport) -> None:
    """Raise when no customer is kept while the other tables have rows to match."""
    others = {t: n for t, n in report.rows_read.items() if t != "customers" and n}
    if report.rows_kept["customers"] or not others:
        return
    read = report.rows_read["customers"]
    if read:
        rules = ", ".join(f"{r} {n:,}" for r, n in report.quarantined["customers"].items())
        why = f"all {read:,} rows were quarantined ({rules})"
    else:
        why = "it has no rows"
    waiting = ", ".join(f"{t} {n:,}" for t, n in others.items())
    raise NoCustomersError(
        f"customers: no customer is left to score, {why}, so the rows of the other tables "
        f"({waiting}) match no customer; is the customers table loaded?"
    )


def validate(
    data: SourceData, *, as_of: datetime, known_channels: Sequence[str]
) -> tuple[SourceData, QualityReport]:
    """Quarantine and normalise source rows by the rules above; return clean data and a report.

    ``as_of`` must be time-zone aware. Kept rows keep their order and contract schema.
    Raises :class:`NoCustomersError` (a ``ValueError``) when no customer is kept but other
    tables have rows.
    """
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError(f"as_of {as_of.isoformat()} has no time zone; pass an aware datetime")
    as_of_utc = as_of.astimezone(UTC)
    frames = data.frames()
    customers = _flag_rules("customers", frames["customers"].lazy(), as_of_utc, None)
    flagged_customers = customers.collect()
    kept_ids = flagged_customers.filter(pl.col(_RULE).is_null())["customer_id"]
    plans = [_flag_rules(t, frames[t].lazy(), as_of_utc, kept_ids) for t in SOURCE_TABLES[1:]]
    collected = dict(zip(SOURCE_TABLES, [flagged_customers, *pl.collect_all(plans)], strict=True))

    kept_frames: dict[str, pl.DataFrame] = {}
    quarantined: dict[str, dict[str, int]] = {}
    normalised: dict[str, dict[str, int]] = {}
    samples: dict[str, pl.DataFrame] = {}
    for table, flagged in collected.items():
        columns = frames[table].columns
        rules = rule_names(table)
        bad = flagged.filter(pl.col(_RULE).is_not_null())
        counts = bad.group_by(_RULE).len()
        by_code = dict(zip(counts[_RULE].to_list(), counts["len"].to_list(), strict=True))
        quarantined[table] = {
            rule: int(by_code[code]) for code, rule in enumerate(rules) if code in by_code
        }
        if bad.height:
            samples[table] = bad.head(SAMPLE_ROWS).select(
                *columns,
                pl.col(_RULE)
                .replace_strict(list(range(len(rules))), rules, return_dtype=pl.String)
                .alias("rule"),
            )
        kept = (
            flagged.filter(pl.col(_RULE).is_null()).select(columns)
            if bad.height
            else flagged.select(columns)
        )
        kept, normalised[table] = _normalise_amounts(table, kept)
        if table == "interactions":
            kept, channels = _normalise_interactions(kept, known_channels)
            normalised[table].update(channels)
        kept_frames[table] = kept

    report = QualityReport(
        rows_read=data.row_counts(),
        rows_kept={table: frame.height for table, frame in kept_frames.items()},
        quarantined=quarantined,
        normalised=normalised,
        samples=samples,
    )
    _require_customers(report)
    return SourceData(**kept_frames), report
