"""The ``retention`` command line, on real SQLite files (the Prefect flows are tested elsewhere)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.retrain import train_and_register
from warehouse.schema import SCHEMA_VERSION
from warehouse.settings import Settings

runner = CliRunner()
END = date(2026, 4, 1)


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small demo warehouse written through the CLI, with a champion model."""
    root = tmp_path_factory.mktemp("cli")
    url = f"sqlite:///{root / 'warehouse.db'}"
    code, output = _invoke(
        "demo-data",
        "--customers",
        "1500",
        "--days",
        "280",
        "--seed",
        "3",
        "--end",
        END.isoformat(),
        "--warehouse",
        url,
    )
    assert code == 0, output
    assert "customers" in output
    settings = Settings(warehouse_url=url, n_snapshots=5, artifacts_dir=root / "artifacts")  # type: ignore[arg-type]
    train_and_register(settings, END, promote=True)
    return url


def test_init_db_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    for _ in range(2):
        code, output = _invoke("init-db", "--warehouse", url)
        assert code == 0, output
        assert f"schema version {SCHEMA_VERSION}" in output


def test_check_reports_a_missing_table_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    code, output = _invoke("check", "--warehouse", f"sqlite:///{empty}")
    assert code == 1
    assert "customers" in output
    assert "Traceback" not in output


def test_check_summarises_the_demo_warehouse(demo_url: str) -> None:
    code, output = _invoke("check", "--warehouse", demo_url)
    assert code == 0, output
    assert "interactions" in output


def test_models_list_show_promote_and_rollback(demo_url: str, tmp_path: Path) -> None:
    code, output = _invoke("models", "list", "--warehouse", demo_url)
    assert code == 0, output
    assert "champion" in output
    version = next(line.split()[0] for line in output.splitlines() if " champion " in line)
    assert version.startswith("m-")
    code, output = _invoke("models", "show", version, "--warehouse", demo_url)
    assert code == 0, output
    assert '"features"' in output and "booster" not in output.split('"features"')[0][-20:]
    code, output = _invoke("models", "rollback", "--warehouse", demo_url)
    assert code == 1  # no earlier champion to restore
    assert "Traceback" not in output
    code, output = _invoke("models", "promote", "m-unknown", "--warehouse", demo_url)
    assert code == 1
    assert "m-unknown" in output


@pytest.mark.usefixtures("prefect_harness")
def test_score_list_and_runs(demo_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETENTION_SEGMENT_CAPACITY", '{"no_such_segment": 5}')
    code, output = _invoke("score", "--as-of", END.isoformat(), "--warehouse", demo_url)
    assert code == 0, output
    # Warnings come first; the outcome is the command's last line.
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1].startswith(f"{END} run ") and "succeeded" in lines[-1], output
    warning = next(i for i, line in enumerate(lines) if "no_such_segment" in line)
    assert lines[warning].startswith("warning: segment cap"), output
    monkeypatch.delenv("RETENTION_SEGMENT_CAPACITY")
    code, output = _invoke(
        "list", "--as-of", END.isoformat(), "--top", "3", "--warehouse", demo_url
    )
    assert code == 0, output
    assert "#1 customer" in output and "#3 customer" in output and "#4 customer" not in output
    assert "why:" in output and "do:" in output
    code, output = _invoke("runs", "--warehouse", demo_url)
    assert code == 0, output
    assert "succeeded" in output
    code, output = _invoke("list", "--segment", "smb", "--top", "50", "--warehouse", demo_url)
    assert code == 0, output
    shown = [line for line in output.splitlines() if line.startswith("#")]
    assert shown and all("  smb  " in line for line in shown)
    code, output = _invoke("list", "--segment", "no_such", "--warehouse", demo_url)
    assert code == 0, output
    assert "no listed customers in segment 'no_such' for the latest day" in output


def test_bad_date_and_bad_configuration_are_one_line_errors(tmp_path: Path) -> None:
    code, output = _invoke(
        "list", "--as-of", "yesterday", "--warehouse", f"sqlite:///{tmp_path}/x.db"
    )
    assert code == 1 and "--as-of" in output
    code, output = _invoke("init-db", "--warehouse", "not a url")
    assert code == 2 and "configuration error" in output


def test_unreachable_warehouse_is_a_clear_error_without_the_password() -> None:
    url = "postgresql+psycopg://retention:hunter2-secret@127.0.0.1:1/crm"
    code, output = _invoke("init-db", "--warehouse", url)
    assert code == 1
    assert "hunter2-secret" not in output
    assert "127.0.0.1" in output
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--snapshots", "3"), "--snapshots must be from 4 to 120, got 3"),
        (("--snapshots", "0"), "--snapshots must be from 4 to 120, got 0"),
        (("--snapshots", "121"), "--snapshots must be from 4 to 120, got 121"),
        (("--horizon-days", "0"), "--horizon-days must be from 1 to 365, got 0"),
        (("--horizon-days", "400"), "--horizon-days must be from 1 to 365, got 400"),
        (("--as-of", "soon"), "--as-of must be a date"),
    ],
)
def test_train_refuses_bad_requests_in_one_line(
    demo_url: str, args: tuple[str, ...], message: str
) -> None:
    code, output = _invoke("train", *args, "--warehouse", demo_url)
    assert code == 1, output
    assert message in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def _training_error(kind: str) -> Exception:
    from models.baseline import BaselineError
    from models.evaluate import EvaluationError
    from models.retraining import TrainingPlanError
    from models.train import TrainingDataError

    kinds: dict[str, type[Exception]] = {
        "data": TrainingDataError,
        "evaluation": EvaluationError,
        "baseline": BaselineError,
        "plan": TrainingPlanError,
    }
    return kinds[kind](f"the {kind} problem, in words")


@pytest.mark.parametrize("kind", ["data", "evaluation", "baseline", "plan"])
def test_expected_training_errors_are_one_line_without_a_traceback(
    demo_url: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_retrain(**_: object) -> None:
        raise _training_error(kind)

    monkeypatch.setattr("flows.retrain.retrain", failing_retrain)
    code, output = _invoke("train", "--warehouse", demo_url)
    assert code == 1
    assert f"training failed: the {kind} problem, in words" in output
    assert "Traceback" not in output


@pytest.mark.usefixtures("prefect_harness")
def test_train_on_too_short_a_history_names_the_dates_and_a_later_as_of(demo_url: str) -> None:
    code, output = _invoke("train", "--as-of", "2025-12-01", "--warehouse", demo_url)
    assert code == 1, output
    assert "training failed:" in output
    assert "warehouse history, which starts 2025-06-25" in output
    assert "Use a later --as-of" in output
    assert "Traceback" not in output


@pytest.mark.usefixtures("prefect_harness")
def test_train_warns_when_the_champion_trained_on_the_holdout_and_show_repeats_it(
    demo_url: str,
) -> None:
    """The fixture's champion (as of END) trained on END - 90 days, which a challenger as of
    END - 30 days holds out: the champion's figures on that holdout are optimistic."""
    earlier = (END - timedelta(days=30)).isoformat()
    code, output = _invoke(
        "train", "--as-of", earlier, "--snapshots", "5", "--no-promote", "--warehouse", demo_url
    )
    assert code == 0, output
    assert "warning:" in output and "optimistic" in output
    version = next(line.split()[1] for line in output.splitlines() if line.startswith("model m-"))
    code, output = _invoke("models", "show", version, "--warehouse", demo_url)
    assert code == 0, output
    assert "warning:" in output and "optimistic" in output
    assert '"warnings"' in output


@pytest.mark.usefixtures("prefect_harness")
def test_demo_is_the_whole_first_experience_and_then_only_scores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'retention.db'}"
    code, output = _invoke("demo", "--customers", "2500", "--top", "5", "--warehouse", url)
    assert code == 0, output
    assert "generating 2,500 demo customers" in output
    assert "training one on monthly point-in-time snapshots" in output
    assert "succeeded" in output and "#1 customer" in output and "#6 customer" not in output
    assert "why:" in output and "do:" in output

    code, again = _invoke("demo", "--customers", "2500", "--top", "5", "--warehouse", url)
    assert code == 0, again
    assert "generating" not in again and "training" not in again
    assert "champion model found" in again and "succeeded" in again


def _one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert "Traceback" not in output, output
    assert len(lines) == 1, output
    return lines[0]


def test_configuration_mistakes_are_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    monkeypatch.setenv("RETENTION_CONFIG", str(tmp_path / "missing.toml"))
    code, output = _invoke("check", "--warehouse", url)
    assert code == 2, output
    assert _one_error_line(output).startswith("configuration error: RETENTION_CONFIG points to ")

    broken = tmp_path / "broken.toml"
    broken.write_text("list_capacity = \n")
    monkeypatch.setenv("RETENTION_CONFIG", str(broken))
    code, output = _invoke("check", "--warehouse", url)
    assert code == 2, output
    assert "broken.toml is not valid TOML" in output and "Traceback" not in output

    monkeypatch.delenv("RETENTION_CONFIG")
    # A rule a setting breaks: one line naming the setting where an operator would set it.
    for name, value, problem in (
        (
            "RETENTION_TABLES__INTERACTION",
            "x",
            "tables.interaction (RETENTION_TABLES__INTERACTION, or interaction under [tables] "
            "in the TOML file): Extra inputs are not permitted",
        ),
        (
            "RETENTION_HORIZON_DAYS",
            "400",
            "horizon_days (RETENTION_HORIZON_DAYS, or horizon_days in the TOML file): Input "
            "should be less than or equal to 365",
        ),
    ):
        with monkeypatch.context() as patch:
            patch.setenv(name, value)
            code, output = _invoke("check", "--warehouse", url)
        assert code == 2, output
        assert _one_error_line(output) == f"configuration error: {problem}"

    monkeypatch.setenv("RETENTION_SEGMENT_CAPACITY", "enterprise: 50")
    code, output = _invoke("check", "--warehouse", url)
    assert code == 2, output
    assert "configuration error" in output and "segment_capacity" in output
    assert "Traceback" not in output


def test_demo_data_refuses_a_warehouse_that_has_data_in_one_line(demo_url: str) -> None:
    code, output = _invoke(
        "demo-data", "--customers", "200", "--days", "60", "--warehouse", demo_url
    )
    assert code == 1
    assert _one_error_line(output).startswith("error: refusing to load demo data")


def test_backfill_with_the_end_before_the_start_stops_before_any_flow(demo_url: str) -> None:
    code, output = _invoke("backfill", "2026-03-05", "2026-03-01", "--warehouse", demo_url)
    assert code == 1
    assert _one_error_line(output) == "error: END 2026-03-01 is before START 2026-03-05"


def test_backfill_with_an_end_that_has_not_begun_stops_before_any_day(demo_url: str) -> None:
    later = date.today() + timedelta(days=2)
    code, output = _invoke("backfill", "2026-03-01", later.isoformat(), "--warehouse", demo_url)
    assert code == 1
    line = _one_error_line(output)
    assert line.startswith(f"error: backfill as of {later} is not possible yet"), line


@pytest.mark.usefixtures("prefect_harness")
def test_a_backfill_that_stops_says_which_days_it_wrote(
    demo_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.nightly
    from models.nightly import NoActiveCustomersError

    real_score_day = flows.nightly.score_day
    failing = END - timedelta(days=1)

    def score_day(settings: Settings, as_of: date, *, kind: str = "nightly") -> object:
        if as_of == failing:
            raise NoActiveCustomersError(f"nobody is active as of {as_of}")
        return real_score_day(settings, as_of, kind=kind)

    monkeypatch.setattr(flows.nightly, "score_day", score_day)
    first = END - timedelta(days=2)
    code, output = _invoke("backfill", first.isoformat(), END.isoformat(), "--warehouse", demo_url)
    assert code == 1, output
    assert "Traceback" not in output
    error = [line for line in output.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: nobody is active as of {failing}; the backfill stopped at {failing}; "
        f"{first} to {first} are written"
    ]
    code, runs = _invoke("runs", "--warehouse", demo_url)
    assert f"backfill  {first}" in runs


# Outside a flow run, Prefect's API log handler warns that it has nowhere to send these.
@pytest.mark.filterwarnings("ignore:Logger 'prefect:UserWarning")
def test_expected_errors_in_task_and_flow_runs_are_logged_without_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from flows.cli import _expected_errors, _no_traceback_in_flow_logs
    from models.actions import ActionRulesError

    def failed(logger: str, exc: BaseException) -> None:
        try:
            raise exc
        except BaseException:
            names = {"task_run_name": "score-and-list-0", "flow_run_name": "nightly-0"}
            logging.getLogger(logger).error("failed with exception", exc_info=True, extra=names)

    with caplog.at_level(logging.ERROR), _no_traceback_in_flow_logs(_expected_errors()):
        for logger in ("prefect.task_runs", "prefect.flow_runs"):
            failed(logger, ActionRulesError("actions.toml: unknown group 'nope'"))
        failed("prefect.task_runs", KeyError("a bug"))
    # The log lines stay; only the expected errors lose their traceback.
    assert [record.exc_info is None for record in caplog.records] == [True, True, False]


def test_the_list_says_why_ranks_are_missing(capsys: pytest.CaptureFixture[str]) -> None:
    import polars as pl

    from flows.cli import _print_list

    frame = pl.DataFrame(
        {
            "as_of": [END] * 3,
            "rank": [1, 2, 5],
            "customer_id": [11, 12, 15],
            "segment": ["smb"] * 3,
            "churn_probability": [0.5, 0.4, 0.3],
            "value_at_risk": [900.0, 800.0, 700.0],
            "priority": ["high", "medium", "low"],
        }
    )
    _print_list(frame)
    assert "(2 customer(s) ranked above #5 are not listed" in capsys.readouterr().out
    _print_list(frame, by_segment=True)
    assert "not listed" not in capsys.readouterr().out
    _print_list(frame.head(2))
    assert "not listed" not in capsys.readouterr().out


def test_training_metrics_show_money_and_counts_whole_and_rates_with_decimals() -> None:
    from flows.cli import _fmt

    assert _fmt(127.0395, whole=True) == "127"
    assert _fmt(4406.2, whole=True) == "4,406"
    assert _fmt(0.12345) == "0.1235"
    assert _fmt(None) == ""


READING_COMMANDS = (["list"], ["runs"], ["models", "list"], ["models", "show", "m-1"])


def test_reading_commands_say_when_the_output_tables_are_missing(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    sqlite3.connect(fresh).close()
    for command in READING_COMMANDS:
        code, output = _invoke(*command, "--warehouse", f"sqlite:///{fresh}")
        assert code == 1, (command, output)
        line = _one_error_line(output)
        assert "output tables do not exist yet" in line and "retention init-db" in line


def test_commands_that_need_a_warehouse_never_create_a_missing_sqlite_file(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "typo.db"
    backfill = ["backfill", "2026-03-01", "2026-03-02"]
    for command in (*READING_COMMANDS, ["check"], ["score"], ["train"], backfill):
        code, output = _invoke(*command, "--warehouse", f"sqlite:///{missing}")
        assert code == 1, (command, output)
        line = _one_error_line(output)
        assert line.endswith(f"the SQLite file {missing} does not exist"), (command, line)
        assert not missing.exists(), command
    # The commands that create a warehouse still do.
    assert _invoke("init-db", "--warehouse", f"sqlite:///{missing}")[0] == 0
    assert missing.exists()


def test_a_newer_schema_is_refused_by_promote_and_reported_by_check(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'w.db'}"
    assert _invoke("init-db", "--warehouse", url)[0] == 0
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO retention_schema_version (version, applied_at) "
                "VALUES (:v, CURRENT_TIMESTAMP)"
            ),
            {"v": SCHEMA_VERSION + 1},
        )
    engine.dispose()
    for command in (["models", "promote", "m-1"], ["models", "rollback"], ["runs"]):
        code, output = _invoke(*command, "--warehouse", url)
        assert code == 1, (command, output)
        assert f"schema version {SCHEMA_VERSION + 1}, newer than this release" in output
        assert "Traceback" not in output


def test_settings_that_cannot_work_are_configuration_errors_before_any_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path / "w.db"
    sqlite3.connect(warehouse).close()
    url = f"sqlite:///{warehouse}"
    cases: list[tuple[dict[str, str], list[str], str]] = [
        (
            {},
            ["runs", "--warehouse", "mysql://u:pw-secret@localhost/crm"],
            "configuration error: no database driver for 'mysql' warehouses is installed",
        ),
        (
            {"RETENTION_TABLES__RETENTION_LIST": "customers"},
            ["check", "--warehouse", url],
            "configuration error: tables.customers and tables.retention_list both name the "
            "table 'customers'",
        ),
        (
            {"RETENTION_ARTIFACTS_DIR": str(warehouse)},
            ["train", "--warehouse", url],
            f"configuration error: artifacts_dir (RETENTION_ARTIFACTS_DIR) {warehouse} cannot be "
            "used as a directory",
        ),
    ]
    for environment, args, start in cases:
        with monkeypatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            code, output = _invoke(*args)
        assert code == 2, (args, output)
        line = _one_error_line(output)
        assert line.startswith(start), line
        assert "pw-secret" not in line


def test_unloadable_action_rules_stop_scoring_before_any_flow(
    demo_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "actions.toml"
    rules.write_text("[groups.nope]\n")
    monkeypatch.setenv("RETENTION_ACTIONS_FILE", str(rules))
    code, output = _invoke("score", "--as-of", END.isoformat(), "--warehouse", demo_url)
    assert code == 1, output
    assert _one_error_line(output).startswith(f"error: {rules}: groups.nope is not a feature group")


def test_text_in_brackets_is_printed_as_it_is(demo_url: str) -> None:
    code, output = _invoke("list", "--segment", "[/]", "--warehouse", demo_url)
    assert code == 0, output
    assert "no listed customers in segment '[/]'" in output
    code, output = _invoke("list", "--as-of", "[/red]", "--warehouse", demo_url)
    assert code == 1, output
    assert _one_error_line(output) == "error: --as-of must be a date like 2026-11-22, got '[/red]'"


def test_an_unreachable_prefect_api_is_one_line_before_any_flow(demo_url: str) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        code, output = _invoke("score", "--as-of", END.isoformat(), "--warehouse", demo_url)
    assert code == 1, output
    line = _one_error_line(output)
    assert line.startswith("error: cannot reach the Prefect API at http://127.0.0.1:9/api: "), line
    assert line.endswith("or unset PREFECT_API_URL to run with a temporary local one")
