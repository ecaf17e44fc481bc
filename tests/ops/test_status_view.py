"""`mac-watchdog status`: the rich table (hosts, nodes, role, where, health, since when, pending
remediation with its steps from the journal), --json unchanged, --watch redrawing live."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.stack_file import load_topology, stack_path
from tests.netutil import free_port
from tests.ops.watchdog_process import project
from tests.unit.harness import PROJECT_DIR
from tests.watchdog.conftest import Servers
from tests.watchdog.seams import cli_command
from watchdog.cli import main
from watchdog.context import Seams
from watchdog.detect import Failures
from watchdog.events import Event, EventKind
from watchdog.journal import DONE, STARTED, Journal
from watchdog.plan import Step, plan
from watchdog.seen import HealthBook, read_seen


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers(free_port())
    yield s
    s.close()


def status(capsys: pytest.CaptureFixture[str], root: Path, servers: Servers, *extra: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(["status", "--stack", "test", "--project-dir", str(root), "--state-dir", str(root / "state"),
              *extra], Seams(transport=servers.transport()))
    out, _ = capsys.readouterr()
    assert isinstance(exited.value.code, int)
    return exited.value.code, out


def test_table_with_health_since_and_a_failover_in_progress(
        tmp_path: Path, servers: Servers, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    root = project(tmp_path / "p")
    topology = load_topology(stack_path(root, "test"))
    servers.serve(topology)
    servers.down(topology.hosts["kvm1"].address)
    servers.down(topology.nodes["db1"].ip)
    servers.down(topology.nodes["web1"].ip)
    # What a running watchdog saw: kvm1 failed 3 minutes ago.
    HealthBook(root / "state", clock=lambda: time.time() - 180)(
        Event(EventKind.HEALTH, {"target": "host:kvm1", "state": "failed", "error": "refused"}))
    # ... and the failover it started: fenced, `up` running for 40 s.
    journal = Journal(root / "state", clock=lambda: time.time() - 40)
    p = plan(topology, Failures(hosts=("kvm1",)))
    rid = journal.begin(p, "detected")
    journal.step(rid, Step.FENCE, STARTED)
    journal.step(rid, Step.FENCE, DONE, fenced=["kvm1"])
    journal.step(rid, Step.PRUNE_STATE, STARTED)
    journal.step(rid, Step.PRUNE_STATE, DONE)
    journal.step(rid, Step.WRITE_CONFIG, STARTED)
    journal.step(rid, Step.WRITE_CONFIG, DONE)
    journal.step(rid, Step.UP, STARTED)
    code, out = status(capsys, root, servers)
    assert code == 1
    lines = out.splitlines()
    [kvm1] = [line for line in lines if line.startswith("│ kvm1 ")]
    assert "active" in kvm1 and "db1, web1" in kvm1 and "down" in kvm1 and "failed for 3 min" in kvm1
    [spare] = [line for line in lines if line.startswith("│ spare1 ")]
    assert "spare" in spare and "up" in spare
    [db1] = [line for line in lines if line.startswith("│ db1 ")]
    assert "mysql" in db1 and "kvm1" in db1 and "down" in db1
    [lb1] = [line for line in lines if line.startswith("│ lb1 ")]
    assert "lb" in lb1 and "kvm3" in lb1 and " up " in lb1
    assert f"pending remediation {rid}: {p.reason} [host_failed], started 40 s ago" in out
    assert "  fence: done in 0.0 s" in out
    assert "  up: running for 40 s" in out


def test_json_is_unchanged(tmp_path: Path, servers: Servers, capsys: pytest.CaptureFixture[str]) -> None:
    root = project(tmp_path / "p")
    servers.serve(load_topology(stack_path(root, "test")))
    code, out = status(capsys, root, servers, "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"stack", "healthy", "targets", "spares", "failedHosts", "failedHostsAnswering",
                         "pendingRemediation"}
    # `degraded`: the dependency a node's self-check names as down (issue 18), else null.
    assert set(data["targets"][0]) == {"kind", "name", "role", "host", "address", "state", "latency_ms",
                                       "error", "degraded"}


def test_watch_redraws_until_ctrl_c(tmp_path: Path, servers: Servers) -> None:
    root = project(tmp_path / "p")
    servers.serve(load_topology(stack_path(root, "test")))
    proc = subprocess.Popen(
        [*cli_command(servers.port), "status", "--watch", "--interval", "0.3", "--stack", "test",
         "--project-dir", str(root), "--state-dir", str(root / "state")],
        cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "120"})
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "stack test: hosts" in out and "pending remediation: none" in out
    assert "error" not in err


def test_the_health_book_survives_a_torn_file(tmp_path: Path) -> None:
    (tmp_path / "health.json").write_text("{not json")
    assert read_seen(tmp_path) == {}


def test_failover_and_reclaim_show_each_step_as_it_finishes() -> None:
    import io

    from rich.console import Console

    from watchdog.cli import _StepProgress

    out = io.StringIO()
    progress = _StepProgress(Console(file=out, width=100))
    steps = ["fence", "prune_state", "write_config", "up", "verify"]
    progress(Event(EventKind.JOURNALED, {"event": "planned", "id": "r", "plan": {"steps": steps}}))
    for step in steps[:4]:
        progress(Event(EventKind.JOURNALED, {"event": "step", "id": "r", "step": step, "status": "started"}))
        progress(Event(EventKind.JOURNALED, {"event": "step", "id": "r", "step": step, "status": "done"}))
    progress(Event(EventKind.JOURNALED, {"event": "step", "id": "r", "step": "verify", "status": "started"}))
    progress(Event(EventKind.JOURNALED, {"event": "step", "id": "r", "step": "verify", "status": "failed",
                                         "error": "web1 not healthy"}))
    lines = out.getvalue().splitlines()
    assert [line.split(" in ")[0] for line in lines] == [
        "[1/5] fence: done", "[2/5] prune_state: done", "[3/5] write_config: done", "[4/5] up: done",
        "[5/5] verify: failed"]
    assert lines[-1].endswith(": web1 not healthy")
