"""What a new user of `mac-watchdog` sees: help without `<bool>`, HOST in usage lines, --version,
no arguments = the help and exit 0, a refusal said once, counts in good English."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.watchdog_process import NO_SPARE_STACK, project
from tests.unit.harness import PROJECT_DIR
from watchdog.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    out, err = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 0, out, err


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "140")


def test_no_arguments_prints_the_help_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys)
    assert code == 0
    assert "Usage: mac-watchdog [OPTIONS] COMMAND [ARGS]..." in out
    assert "error" not in out + err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out.strip()) == (0, "mac-watchdog 0.1.0")


@pytest.mark.parametrize("command", ["run", "failover", "status", "reclaim", "plan", "validate"])
def test_help_shows_no_bool_type_and_names_arguments_in_capitals(
        capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "<bool>" not in out
    assert "{" not in out.split("Usage:", 1)[1].splitlines()[0]
    if command in ("failover", "reclaim"):
        assert f"Usage: mac-watchdog {command} [OPTIONS] HOST" in out


def test_one_spare_is_one_spare(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--project-dir", str(PROJECT_DIR), "--stack", "dev",
                       "--stack", "prod")
    assert code == 0
    assert "dev: ok (4 hosts, 1 spare, 5 nodes)" in out
    assert "prod: ok (7 hosts, 2 spares, 6 nodes)" in out


def test_failover_dry_run_says_its_refusal_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p", NO_SPARE_STACK)
    code, out, err = run(capsys, "failover", "kvm1", "--dry-run", "--stack", "test",
                         "--project-dir", str(root), "--state-dir", str(root / "state"))
    assert code == 1
    text = out + err
    assert "action: refuse" in out
    [reason] = [line for line in text.splitlines() if "no spare" in line.lower()]
    assert reason.startswith("reason: ")


def test_readme_says_json_log_goes_to_stderr() -> None:
    readme = (PROJECT_DIR / "README.md").read_text()
    assert "`--json-log` prints one JSON object per line **on stderr**" in readme


def test_ctrl_c_names_the_unfinished_remediation_when_there_is_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from components.stack_file import load_topology, stack_path
    from tests.netutil import free_port
    from tests.watchdog.seams import redirect
    from watchdog.context import Seams
    from watchdog.detect import Failures
    from watchdog.events import Event, EventKind
    from watchdog.journal import FAILED, STARTED, Journal
    from watchdog.plan import Step, plan

    root = project(tmp_path / "p")
    p = plan(load_topology(stack_path(root, "test")), Failures(hosts=("kvm1",)))
    journal = Journal(root / "state")
    rid = journal.begin(p, "detected")
    journal.step(rid, Step.FENCE, STARTED)
    journal.step(rid, Step.FENCE, FAILED, error="ipmitool: timeout")  # backing off: not resumed yet

    def ctrl_c(event: Event) -> None:
        if event.kind is EventKind.ROUND:
            raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        main(["run", "--stack", "test", "--project-dir", str(root), "--state-dir", str(root / "state"),
              "--metrics-port", "0", "--pulumi-root", str(tmp_path / "no-pulumi")],
             Seams(events=ctrl_c, transport=redirect(free_port())))
    _, err = capsys.readouterr()
    assert exited.value.code == 130
    assert err.rstrip().endswith(f"error: interrupted; remediation {rid} ({p.reason}) resumes at step "
                                 "fence at the next start")
