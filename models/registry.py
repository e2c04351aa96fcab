"""The model registry: versioned models in the warehouse table ``model_registry``.

A row holds everything needed to score and to audit: the booster as LightGBM
text with its SHA-256, the calibrator and category lists as JSON, the feature
list in order, parameters, training window and snapshot dates, holdout metrics,
library versions and a status (``champion``, ``challenger``, ``retired``). No
pickle anywhere: a registry row is readable by any tool.

Loading verifies the booster's SHA-256 and its structure before LightGBM reads
it (LightGBM can abort the process on a truncated model), so a tampered or
truncated model is refused with :class:`ModelIntegrityError`.

Status changes happen in one transaction that locks the table against other
promotions: the old champion is retired and the new one set, or nothing changes.
Each promotion is recorded in the row's ``metrics["promotions"]`` with the
champion it replaced, which is what :func:`rollback` restores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import polars as pl
import sqlalchemy as sa

from models.calibration import CalibrationError, Calibrator
from models.encoding import FeatureEncoding, FeatureError, FloatArray
from models.evaluate import LOWER_IS_BETTER
from models.train import TrainedModel
from warehouse.schema import Warehouse

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
RETIRED = "retired"
STATUSES = (CHAMPION, CHALLENGER, RETIRED)

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class RegistryError(RuntimeError):
    """A registry operation that cannot be done; the message says why."""


class ModelNotFoundError(RegistryError, LookupError):
    """No model with the requested version."""


class NoChampionError(ModelNotFoundError):
    """No model has the status champion."""


class ModelIntegrityError(RegistryError):
    """A stored model is damaged: hash mismatch, truncated or unreadable parts."""


# -- helpers -------------------------------------------------------------------------------------


def booster_sha256(text: str) -> str:
    """SHA-256 (hex) of the booster text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries a stored model depends on."""
    return {
        "lightgbm": str(lgb.__version__),
        "polars": str(pl.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def new_version(model: TrainedModel, created_at: datetime) -> str:
    """``m-YYYYMMDD-HHMMSS-<first 8 hex of the booster's SHA-256>`` (UTC)."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    return f"m-{stamp}-{booster_sha256(model.booster_text())[:8]}"


def _json_safe(value: Any) -> Any:
    """Dates to ISO strings, NaN and infinities to null, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _json_value(value: Any, what: str, version: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ModelIntegrityError(f"model {version}: {what} is not valid JSON: {exc}") from exc
    return value


# -- booster text structure ----------------------------------------------------------------------

_TREE_ARRAYS_INTERNAL = ("split_feature", "threshold", "decision_type", "left_child", "right_child")


def check_booster_text(text: str, features: Sequence[str] | None = None) -> int:
    """Check a LightGBM text model's structure without handing it to LightGBM.

    Verifies the header, that every tree is present with the byte size the header
    declares and consistent array lengths, the end markers, and (when given) the
    feature names. Returns the number of trees; raises :class:`ModelIntegrityError`.
    """
    data = text.encode("utf-8")
    header_end = data.find(b"\n\n")
    if not data.startswith(b"tree\n") or header_end < 0:
        raise ModelIntegrityError("booster text does not start with a LightGBM model header")
    header: dict[str, str] = {}
    for line in data[:header_end].decode("utf-8").splitlines()[1:]:
        key, sep, value = line.partition("=")
        if sep:
            header[key] = value
    for key in ("version", "num_class", "max_feature_idx", "feature_names", "tree_sizes"):
        if key not in header:
            raise ModelIntegrityError(f"booster header lacks {key!r}: the text is damaged")
    try:
        sizes = [int(v) for v in header["tree_sizes"].split()]
        max_feature_idx = int(header["max_feature_idx"])
    except ValueError as exc:
        raise ModelIntegrityError(f"booster header is damaged: {exc}") from exc
    names = header["feature_names"].split(" ")
    if len(names) != max_feature_idx + 1:
        raise ModelIntegrityError(
            f"booster header names {len(names)} features but max_feature_idx is {max_feature_idx}"
        )
    if features is not None and names != list(features):
        raise ModelIntegrityError(
            f"booster features {names} differ from the registered feature list {list(features)}"
        )
    position = header_end + 2
    for index, size in enumerate(sizes):
        block = data[position : position + size]
        if len(block) != size or not block.startswith(f"Tree={index}\n".encode()):
            raise ModelIntegrityError(
                f"booster text is truncated or damaged at tree {index} of {len(sizes)}"
            )
        _check_tree(block.decode("utf-8"), index)
        position += size
    rest = data[position:]
    if not rest.startswith(b"end of trees"):
        raise ModelIntegrityError("booster text has no 'end of trees' marker: truncated")
    if b"\nend of parameters\n" not in rest:
        raise ModelIntegrityError("booster text has no 'end of parameters' marker: truncated")
    return len(sizes)


def _check_tree(block: str, index: int) -> None:
    fields: dict[str, str] = {}
    for line in block.splitlines()[1:]:
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    try:
        leaves = int(fields["num_leaves"])
        categorical_splits = int(fields.get("num_cat", "0"))
        expected = {"leaf_value": leaves}
        if leaves > 1:
            expected.update({name: leaves - 1 for name in _TREE_ARRAYS_INTERNAL})
        if categorical_splits > 0:
            expected["cat_boundaries"] = categorical_splits + 1
        for name, count in expected.items():
            values = [float(v) for v in fields[name].split()]
            if len(values) != count:
                raise ValueError(f"{name} has {len(values)} values, expected {count}")
            # Split thresholds may legitimately be infinite (a split at the last bin);
            # leaf values never are.
            if name == "leaf_value" and not all(math.isfinite(v) for v in values):
                raise ValueError("leaf_value has values that are not finite")
    except (KeyError, ValueError) as exc:
        raise ModelIntegrityError(f"booster tree {index} is damaged: {exc}") from exc


# -- registered models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredModel:
    """A model restored from the registry, with its registry metadata."""

    version: str
    status: str
    created_at: datetime
    status_changed_at: datetime
    label_kind: str
    horizon_days: int
    model: TrainedModel
    metrics: dict[str, Any]
    library_versions: dict[str, str]
    booster_sha256: str
    training_reference: dict[str, Any] | None
    report_path: str | None
    feature_settings: dict[str, Any] = field(default_factory=dict)
    """The settings that shaped the features and the population when it was trained
    (``lookback_days``, ``inactivity_days``, ``public_channels``, ``timezone``); empty for
    models registered before they were recorded."""

    @property
    def features(self) -> list[str]:
        """The model's feature list, in order."""
        return self.model.features

    @property
    def event_types(self) -> list[str]:
        """The activity event types the model's features were built for."""
        return self.model.event_types

    def predict_proba(self, frame: pl.DataFrame) -> FloatArray:
        """Calibrated churn probabilities (see :meth:`TrainedModel.predict_proba`)."""
        return self.model.predict_proba(frame)

    def contributions(self, frame: pl.DataFrame) -> FloatArray:
        """Exact contributions (see :meth:`TrainedModel.contributions`)."""
        return self.model.contributions(frame)


def register(
    engine: sa.Engine,
    wh: Warehouse,
    model: TrainedModel,
    *,
    metrics: Mapping[str, Any],
    label_kind: str,
    horizon_days: int,
    training_reference: Mapping[str, Any] | None = None,
    feature_settings: Mapping[str, Any] | None = None,
    report_path: str | None = None,
    created_at: datetime | None = None,
    version: str | None = None,
) -> str:
    """Store a trained model as a challenger and return its version.

    ``metrics`` is usually :meth:`models.evaluate.EvaluationReport.to_dict`; NaN is
    stored as null. ``version`` defaults to :func:`new_version`.
    """
    table = wh["model_registry"]
    created = _utc(created_at) if created_at is not None else _now()
    text = model.booster_text()
    check_booster_text(text, model.features)
    digest = booster_sha256(text)
    version = version or new_version(model, created)
    if not _VERSION.fullmatch(version):
        raise RegistryError(f"model version {version!r} is not a valid version string")
    if not model.train_dates or not model.holdout_dates:
        raise RegistryError("a model without training and holdout dates cannot be registered")
    params = {
        **model.params,
        "best_iteration": model.best_iteration,
        "categories": {name: list(model.categories[name]) for name in model.categorical},
        "validation_dates": [d.isoformat() for d in model.validation_dates],
        "event_types": list(model.event_types),
        "feature_settings": dict(feature_settings or {}),
    }
    stored_metrics = dict(_json_safe(dict(metrics)))
    stored_metrics.setdefault("promotions", [])
    row = {
        "model_version": version,
        "created_at": created,
        "status": CHALLENGER,
        "status_changed_at": created,
        "label_kind": label_kind,
        "horizon_days": int(horizon_days),
        "training_start": min(model.train_dates),
        "training_end": max(model.train_dates),
        "snapshot_dates": [d.isoformat() for d in model.train_dates],
        "holdout_dates": [d.isoformat() for d in model.holdout_dates],
        "features": list(model.features),
        "categorical_features": list(model.categorical),
        "params": _json_safe(params),
        "metrics": stored_metrics,
        "library_versions": library_versions(),
        "booster": text,
        "booster_sha256": digest,
        "calibrator": model.calibrator.to_dict(),
        "training_reference": None
        if training_reference is None
        else _json_safe(dict(training_reference)),
        "report_path": report_path,
    }
    with engine.begin() as conn:
        exists = conn.execute(
            sa.select(table.c.model_version).where(table.c.model_version == version)
        ).first()
        if exists is not None:
            raise RegistryError(f"model version {version} is already registered")
        conn.execute(sa.insert(table).values(**row))
    logger.info("registered model %s (%d trees) as challenger", version, model.best_iteration)
    return version


def set_report_path(engine: sa.Engine, wh: Warehouse, version: str, report_path: str) -> None:
    """Record where a model's report was written."""
    table = wh["model_registry"]
    with engine.begin() as conn:
        result = conn.execute(
            sa.update(table)
            .where(table.c.model_version == version)
            .values(report_path=str(report_path))
        )
        if result.rowcount == 0:
            raise ModelNotFoundError(f"no model version {version} in the registry")


def _restore(row: sa.RowMapping) -> RegisteredModel:
    version = str(row["model_version"])
    text = row["booster"]
    if not isinstance(text, str) or not text:
        raise ModelIntegrityError(f"model {version}: the booster text is empty")
    expected = str(row["booster_sha256"] or "")
    actual = booster_sha256(text)
    if actual != expected:
        raise ModelIntegrityError(
            f"model {version}: booster SHA-256 {actual[:12]}... does not match the registered "
            f"{expected[:12] or '(none)'}...; the stored model was altered or truncated "
            f"({len(text.encode('utf-8'))} bytes)"
        )
    features = [str(f) for f in _json_value(row["features"], "features", version)]
    categorical = [
        str(f) for f in _json_value(row["categorical_features"], "categorical_features", version)
    ]
    params = dict(_json_value(row["params"], "params", version))
    try:
        check_booster_text(text, features)
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(f"model {version}: {exc}") from exc
    try:
        calibrator = Calibrator.from_json(_json_value(row["calibrator"], "calibrator", version))
    except CalibrationError as exc:
        raise ModelIntegrityError(f"model {version}: calibrator is unreadable: {exc}") from exc
    categories_raw = params.pop("categories", {})
    best_iteration = int(params.pop("best_iteration", 0))
    validation_dates = [date.fromisoformat(d) for d in params.pop("validation_dates", [])]
    event_types = [str(e) for e in params.pop("event_types", [])]
    feature_settings = dict(params.pop("feature_settings", None) or {})
    categories = {str(k): [str(v) for v in levels] for k, levels in categories_raw.items()}
    try:
        FeatureEncoding(tuple(features), tuple(categorical), categories)
    except FeatureError as exc:
        raise ModelIntegrityError(f"model {version}: feature metadata is damaged: {exc}") from exc
    booster = lgb.Booster(model_str=text)
    if list(booster.feature_name()) != features:
        raise ModelIntegrityError(f"model {version}: booster features differ from the registry")
    model = TrainedModel(
        booster=booster,
        features=features,
        categorical=categorical,
        categories=categories,
        calibrator=calibrator,
        params=params,
        best_iteration=best_iteration or int(booster.num_trees()),
        train_dates=[
            date.fromisoformat(d)
            for d in _json_value(row["snapshot_dates"], "snapshot_dates", version)
        ],
        holdout_dates=[
            date.fromisoformat(d)
            for d in _json_value(row["holdout_dates"], "holdout_dates", version)
        ],
        validation_dates=validation_dates,
        event_types=event_types,
    )
    reference = _json_value(row["training_reference"], "training_reference", version)
    return RegisteredModel(
        version=version,
        status=str(row["status"]),
        created_at=_utc(row["created_at"]),
        status_changed_at=_utc(row["status_changed_at"]),
        label_kind=str(row["label_kind"]),
        horizon_days=int(row["horizon_days"]),
        model=model,
        metrics=dict(_json_value(row["metrics"], "metrics", version)),
        library_versions=dict(_json_value(row["library_versions"], "library_versions", version)),
        booster_sha256=expected,
        training_reference=None if reference is None else dict(reference),
        report_path=row["report_path"],
        feature_settings=feature_settings,
    )


def load_model(engine: sa.Engine, wh: Warehouse, version: str | None = None) -> RegisteredModel:
    """Load a model by version, or the champion when ``version`` is None.

    Raises :class:`NoChampionError` or :class:`ModelNotFoundError` when there is no
    such model, :class:`ModelIntegrityError` when the stored model is damaged.
    """
    table = wh["model_registry"]
    with engine.connect() as conn:
        if version is None:
            rows = conn.execute(sa.select(table).where(table.c.status == CHAMPION)).mappings().all()
            if not rows:
                raise NoChampionError(
                    f"no champion model in {table.fullname}: train one and promote it"
                )
            if len(rows) > 1:
                names = sorted(str(r["model_version"]) for r in rows)
                raise RegistryError(f"{len(rows)} models are marked champion: {names}")
            row = rows[0]
        else:
            found = (
                conn.execute(sa.select(table).where(table.c.model_version == version))
                .mappings()
                .first()
            )
            if found is None:
                raise ModelNotFoundError(f"no model version {version} in {table.fullname}")
            row = found
    return _restore(row)


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    overall = metrics.get("overall")
    if isinstance(overall, Mapping) and isinstance(overall.get("model"), Mapping):
        return dict(overall["model"])
    return {k: v for k, v in metrics.items() if not isinstance(v, Mapping | list)}


_SUMMARY_COLUMNS = (
    "model_version",
    "status",
    "created_at",
    "status_changed_at",
    "label_kind",
    "horizon_days",
    "training_start",
    "training_end",
    "booster_sha256",
    "report_path",
)


def list_models(engine: sa.Engine, wh: Warehouse) -> list[dict[str, Any]]:
    """Registered models, newest first, without booster text.

    Each entry has the summary columns and ``metrics``: the model's own overall
    holdout metrics (``pr_auc``, ``roc_auc``, ...).
    """
    table = wh["model_registry"]
    columns = [table.c[name] for name in _SUMMARY_COLUMNS]
    query = sa.select(*columns, table.c.metrics).order_by(
        table.c.created_at.desc(), table.c.model_version.desc()
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    result: list[dict[str, Any]] = []
    for row in rows:
        entry = {name: row[name] for name in _SUMMARY_COLUMNS}
        entry["created_at"] = _utc(entry["created_at"])
        entry["status_changed_at"] = _utc(entry["status_changed_at"])
        metrics = _json_value(row["metrics"], "metrics", str(row["model_version"])) or {}
        entry["metrics"] = _headline(metrics)
        result.append(entry)
    return result


def describe_model(engine: sa.Engine, wh: Warehouse, version: str) -> dict[str, Any]:
    """Everything stored about one model except the booster text (its size instead)."""
    table = wh["model_registry"]
    columns = [c for c in table.columns if c.name != "booster"]
    with engine.connect() as conn:
        row = (
            conn.execute(
                sa.select(*columns, sa.func.length(table.c.booster).label("booster_chars")).where(
                    table.c.model_version == version
                )
            )
            .mappings()
            .first()
        )
    if row is None:
        raise ModelNotFoundError(f"no model version {version} in {table.fullname}")
    json_columns = {c.name for c in columns if isinstance(c.type, sa.JSON)}
    info = {
        key: _json_value(value, key, version) if key in json_columns else value
        for key, value in row.items()
    }
    info["created_at"] = _utc(info["created_at"])
    info["status_changed_at"] = _utc(info["status_changed_at"])
    return info


def champion_version(engine: sa.Engine, wh: Warehouse) -> str | None:
    """The champion's version, or None."""
    table = wh["model_registry"]
    with engine.connect() as conn:
        value = conn.execute(
            sa.select(table.c.model_version).where(table.c.status == CHAMPION)
        ).scalar()
    return None if value is None else str(value)


# -- status changes ------------------------------------------------------------------------------


def _lock(conn: sa.Connection, table: sa.Table) -> None:
    """Serialise status changes: other writers wait, readers do not."""
    if conn.dialect.name == "postgresql":
        name = conn.dialect.identifier_preparer.format_table(table)
        conn.execute(sa.text(f"LOCK TABLE {name} IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # A write as the first statement takes SQLite's write lock for the transaction.
        conn.execute(sa.update(table).where(sa.false()).values(status=table.c.status))


def _set_status(
    conn: sa.Connection,
    table: sa.Table,
    version: str,
    status: str,
    at: datetime,
    promotion: Mapping[str, Any] | None = None,
) -> None:
    values: dict[str, Any] = {"status": status, "status_changed_at": at}
    if promotion is not None:
        metrics = _json_value(
            conn.execute(
                sa.select(table.c.metrics).where(table.c.model_version == version)
            ).scalar_one(),
            "metrics",
            version,
        )
        metrics = dict(metrics or {})
        history = metrics.get("promotions", [])
        if not isinstance(history, list):
            raise ModelIntegrityError(
                f"the promotion history of model {version} is damaged: "
                f"expected a list, found {type(history).__name__}"
            )
        metrics["promotions"] = [*history, dict(promotion)]
        values["metrics"] = metrics
    conn.execute(sa.update(table).where(table.c.model_version == version).values(**values))


def _champions(conn: sa.Connection, table: sa.Table) -> list[str]:
    rows = conn.execute(sa.select(table.c.model_version).where(table.c.status == CHAMPION))
    return [str(v) for v in rows.scalars()]


def promote(engine: sa.Engine, wh: Warehouse, version: str) -> None:
    """Make ``version`` the champion and retire the current one, atomically.

    Promoting the champion again changes nothing.
    """
    table = wh["model_registry"]
    with engine.begin() as conn:
        _lock(conn, table)
        status = conn.execute(
            sa.select(table.c.status).where(table.c.model_version == version)
        ).scalar()
        if status is None:
            raise ModelNotFoundError(f"no model version {version} in {table.fullname}")
        if status == CHAMPION:
            logger.info("model %s is already the champion", version)
            return
        previous = _champions(conn, table)
        now = _now()
        for old in previous:
            _set_status(conn, table, old, RETIRED, now)
        _set_status(
            conn,
            table,
            version,
            CHAMPION,
            now,
            promotion={
                "at": now.isoformat(),
                "how": "promote",
                "replaced": previous[0] if previous else None,
            },
        )
        if _champions(conn, table) != [version]:
            raise RegistryError("promotion would leave more than one champion; nothing changed")
    logger.info("promoted %s to champion (retired: %s)", version, previous or "none")


def rollback(engine: sa.Engine, wh: Warehouse) -> str:
    """Retire the champion and restore the champion it replaced; return that version.

    Repeated rollbacks walk further back through earlier champions.
    """
    table = wh["model_registry"]
    with engine.begin() as conn:
        _lock(conn, table)
        current = _champions(conn, table)
        if not current:
            raise NoChampionError(f"no champion model in {table.fullname} to roll back")
        if len(current) > 1:
            raise RegistryError(f"{len(current)} models are marked champion: {sorted(current)}")
        champion = current[0]
        metrics = _json_value(
            conn.execute(
                sa.select(table.c.metrics).where(table.c.model_version == champion)
            ).scalar_one(),
            "metrics",
            champion,
        )
        promotions = (metrics or {}).get("promotions") or []
        target = promotions[-1].get("replaced") if promotions else None
        if target is None:
            raise RegistryError(
                f"champion {champion} replaced no earlier champion: nothing to restore"
            )
        target_row = conn.execute(
            sa.select(table.c.metrics).where(table.c.model_version == target)
        ).first()
        if target_row is None:
            raise ModelNotFoundError(f"previous champion {target} is no longer in the registry")
        target_metrics = _json_value(target_row[0], "metrics", target) or {}
        target_promotions = target_metrics.get("promotions") or []
        before_target = target_promotions[-1].get("replaced") if target_promotions else None
        now = _now()
        _set_status(conn, table, champion, RETIRED, now)
        _set_status(
            conn,
            table,
            target,
            CHAMPION,
            now,
            promotion={"at": now.isoformat(), "how": "rollback", "replaced": before_target},
        )
    logger.info("rolled back: %s retired, %s champion again", champion, target)
    return str(target)


# -- promotion gate ------------------------------------------------------------------------------


def _value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    if metrics is None:
        return None
    value = metrics.get(metric)
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def gate(
    candidate_metrics: Mapping[str, Any],
    champion_metrics: Mapping[str, Any] | None,
    baseline_metrics: Mapping[str, Any],
    metric: str = "pr_auc",
    margin: float = 0.005,
) -> tuple[bool, str]:
    """Whether the candidate should become champion, and why, in words.

    All metrics must come from the same holdout rows. Without a champion the
    candidate is promoted when it beats the rule baseline. With one, it must beat
    the champion by at least ``margin`` and also beat the rule baseline. "Beat" is
    strictly better: higher, or lower for log loss, Brier and calibration error.
    """
    if margin < 0:
        raise ValueError(f"margin must not be negative, got {margin}")
    lower_better = metric in LOWER_IS_BETTER
    sign = -1.0 if lower_better else 1.0

    def fmt(value: float) -> str:
        return f"{value:.4f}"

    candidate = _value(candidate_metrics, metric)
    if candidate is None:
        return False, f"refused: the candidate has no {metric} on the holdout"
    baseline = _value(baseline_metrics, metric)
    if baseline is None:
        return False, f"refused: the rule baseline has no {metric} on the holdout"
    over_baseline = sign * (candidate - baseline)
    if over_baseline <= 0:
        return False, (
            f"refused: {metric} {fmt(candidate)} does not beat the rule baseline's {fmt(baseline)}"
        )
    if champion_metrics is None:
        return True, (
            f"promoted: no champion yet and {metric} {fmt(candidate)} beats the rule "
            f"baseline's {fmt(baseline)}"
        )
    champion = _value(champion_metrics, metric)
    if champion is None:
        return False, f"refused: the champion has no {metric} on the same holdout to compare with"
    improvement = sign * (candidate - champion)
    direction = "lower" if lower_better else "higher"
    # The margin is met when the improvement reaches it up to float rounding (0.105 - 0.1).
    if improvement > 0 and improvement >= margin - 1e-12:
        return True, (
            f"promoted: {metric} {fmt(candidate)} is {fmt(improvement)} {direction} than the "
            f"champion's {fmt(champion)} (margin {fmt(margin)}) and beats the rule baseline's "
            f"{fmt(baseline)}"
        )
    return False, (
        f"refused: {metric} {fmt(candidate)} vs the champion's {fmt(champion)} is "
        f"{fmt(improvement)} {direction}, less than the margin {fmt(margin)}"
    )
