"""The rows the nightly job reads are enough: its features equal those of the full history.

Scoring reads only the window :func:`models.nightly.scoring_window` gives (pushed into SQL by
:func:`warehouse.extract.source_query`); training reads from much earlier. Both must give the
same features for the same snapshot, or the champion sees other numbers at night than it
learned from.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from features.build import FeatureConfig, build_features, discover_event_types
from models.nightly import scoring_window
from warehouse.demo import generate_demo
from warehouse.extract import source_query
from warehouse.schema import SOURCE_TABLES, build_warehouse
from warehouse.settings import Settings

END = date(2026, 6, 1)


@cache
def _history() -> dict[str, pl.DataFrame]:
    return generate_demo(n_customers=600, days=300, seed=11, end=END)


def _as_read_for(settings: Settings, as_of: date) -> dict[str, pl.LazyFrame]:
    """The demo history as the nightly job would read it for ``as_of`` (exact row filter)."""
    window = scoring_window(settings, as_of, now=datetime(2030, 1, 1, tzinfo=UTC))
    wh = build_warehouse(settings)
    frames: dict[str, pl.LazyFrame] = {}
    for name in SOURCE_TABLES:
        _, exact = source_query(
            wh, name, window_start=window.start, window_end=window.end, dialect="postgresql"
        )
        frames[name] = _history()[name].lazy().filter(exact)
    return frames


@pytest.mark.parametrize(
    ("label_kind", "inactivity_days"), [("subscription", 30), ("inactivity", 120)]
)
def test_the_scoring_window_gives_the_features_of_the_full_history(
    label_kind: str, inactivity_days: int
) -> None:
    settings = Settings(label_kind=label_kind, inactivity_days=inactivity_days)
    config = FeatureConfig.from_settings(settings)
    full = {name: frame.lazy() for name, frame in _history().items()}
    event_types = discover_event_types(full["activity"], config.max_event_types)
    for as_of in (date(2026, 3, 1), date(2026, 5, 17)):
        read = _as_read_for(settings, as_of)
        assert (
            read["interactions"].select(pl.len()).collect().item()
            < _history()["interactions"].height
        )
        expected = build_features(full, [as_of], config, event_types).collect()
        actual = build_features(read, [as_of], config, event_types).collect()
        assert expected.height > 100
        assert_frame_equal(actual, expected)
