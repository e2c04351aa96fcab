"""The Prefect side: prefect.yaml is valid, and the flows run under the test harness."""

from __future__ import annotations

import importlib
import inspect
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.runtime import load_demo_warehouse
from warehouse.db import engine_for
from warehouse.outputs import latest_runs, read_retention_list
from warehouse.schema import build_warehouse
from warehouse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 3, 1)


def _deployments() -> list[dict[str, Any]]:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = config["deployments"]
    assert isinstance(deployments, list) and deployments
    return deployments


def test_prefect_yaml_deployments_are_valid() -> None:
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    names = set()
    for deployment in _deployments():
        names.add(deployment["name"])
        module_path, _, attribute = deployment["entrypoint"].partition(":")
        module = importlib.import_module(module_path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attribute)
        assert isinstance(flow, Flow), deployment["entrypoint"]
        signature = inspect.signature(flow.fn)
        unknown = set(deployment.get("parameters") or {}) - set(signature.parameters)
        assert not unknown, f"{deployment['name']}: parameters {unknown} not in the flow"
        assert deployment["work_pool"]["name"]
        for schedule in deployment.get("schedules") or []:
            CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))
    assert {"nightly-score", "weekly-retrain", "backfill"} <= names
    nightly = next(d for d in _deployments() if d["name"] == "nightly-score")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"


@pytest.mark.usefixtures("prefect_harness")
def test_retrain_and_nightly_flows_run_under_prefect(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    from flows.nightly import nightly_score, summary_markdown
    from flows.retrain import retrain

    settings = Settings(
        warehouse_url=f"sqlite:///{tmp_path / 'warehouse.db'}",  # type: ignore[arg-type]
        n_snapshots=5,
        list_capacity=25,
        artifacts_dir=tmp_path / "artifacts",
    )
    load_demo_warehouse(settings, customers=1500, days=280, seed=5, end=AS_OF)

    trained = retrain(as_of=AS_OF, promote=True, settings=settings)
    assert trained.promoted, trained.decision
    result = nightly_score(as_of=AS_OF, settings=settings)
    assert result.status == "succeeded"
    assert result.model_version == trained.version

    engine = engine_for(settings)
    wh = build_warehouse(settings)
    listed = read_retention_list(engine, wh, as_of=AS_OF)
    runs = latest_runs(engine, wh, limit=5)
    engine.dispose()
    assert listed.height == 25
    assert runs.filter(runs["run_id"] == result.run_id)["status"].to_list() == ["succeeded"]

    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts()}
    assert f"retention-list-{AS_OF.isoformat()}" in artifacts
    summary = artifacts[f"retention-list-{AS_OF.isoformat()}-summary"]
    assert summary.data == summary_markdown(result)
    assert "## Drift: " in str(summary.data)
    keys = set(artifacts)
    assert "model-report" in keys
