"""Tiny literal source frames with the contract schema, for feature and label tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import polars as pl

from warehouse.schema import SOURCE_TABLES, contract_schema

INTERACTION_DEFAULTS: dict[str, Any] = {
    "channel": "email",
    "kind": "query",
    "is_public": False,
    "first_response_at": None,
    "resolved_at": None,
    "transfers": 0,
    "reopened": False,
    "csat": None,
}
CUSTOMER_DEFAULTS: dict[str, Any] = {
    "signup_at": datetime(2025, 1, 1, tzinfo=UTC),
    "segment": "smb",
    "country": "DE",
    "language": "de",
    "monthly_value": 100.0,
}


def ts(text: str) -> datetime:
    """``"2026-03-01 10:30"`` (or ``"2026-03-01"``) as a UTC instant."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def frame(name: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """A contract-typed frame of table ``name`` from row dicts."""
    schema = contract_schema(name)
    return pl.DataFrame([{c: row.get(c) for c in schema} for row in rows], schema=schema)


def make_sources(
    *,
    customers: Sequence[Mapping[str, Any]] | None = None,
    subscriptions: Sequence[Mapping[str, Any]] = (),
    interactions: Sequence[Mapping[str, Any]] = (),
    activity: Sequence[Mapping[str, Any]] = (),
    retention_contacts: Sequence[Mapping[str, Any]] = (),
) -> dict[str, pl.LazyFrame]:
    """Lazy sources keyed by logical name; defaults fill the columns a test does not care about.

    Without ``customers``, every customer id of the subscriptions gets a default row.
    Interactions get ids 1, 2, ... unless given.
    """
    if customers is None:
        ids = sorted({int(s["customer_id"]) for s in subscriptions})
        customers = [{"customer_id": i} for i in ids]
    tables: dict[str, list[dict[str, Any]]] = {
        "customers": [{**CUSTOMER_DEFAULTS, **c} for c in customers],
        "subscriptions": [dict(row) for row in subscriptions],
        "interactions": [
            {**INTERACTION_DEFAULTS, "interaction_id": i + 1, **row}
            for i, row in enumerate(interactions)
        ],
        "activity": [dict(row) for row in activity],
        "retention_contacts": [dict(row) for row in retention_contacts],
    }
    return {name: frame(name, tables[name]).lazy() for name in SOURCE_TABLES}


def subscribed(*customer_ids: int, since: str = "2025-06-01") -> list[dict[str, Any]]:
    """One open-ended subscription per customer, started at ``since``."""
    return [
        {"customer_id": c, "started_at": ts(since), "plan": "pro", "mrr": 50.0}
        for c in customer_ids
    ]
