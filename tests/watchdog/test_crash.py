"""Crash in the middle: the process is SIGKILLed right after journaling `config written`; the
restarted watchdog resumes at `up` and repeats nothing. Uses the STAND-IN pulumi (no real deploy)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from components.stack_file import load_topology, stack_path
from tests.watchdog.conftest import REPO, Servers, StandIn
from tests.watchdog.seams import cli_command
from tests.watchdog.state_fixture import exported
from watchdog.journal import Journal


def cli(*args: str, port: int | None = None,
        kill: tuple[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(port, kill), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_standin_cli_crash_after_config_written_resumes_at_up(
        project: Path, standin: StandIn, servers: Servers, tmp_path: Path) -> None:
    stack_file = stack_path(project, "test")
    fence_log = tmp_path / "fence.log"
    fence_cmd = f"sh -c 'echo kvm1 >> {fence_log}'"
    stack_file.write_text(stack_file.read_text().replace(
        'address: 127.0.1.1, fence: "true"', f'address: 127.0.1.1, fence: "{fence_cmd}"'))
    topology = load_topology(stack_file)
    standin.set_state(exported())
    state_dir = tmp_path / "state"
    common = ["--stack", "test", "--project-dir", str(project), "--state-dir", str(state_dir),
              "--pulumi-root", str(standin.root)]

    servers.serve(topology)  # db2, the other copy of the data, answers: db1 may move
    for address in ("127.0.1.1", "127.0.2.11", "127.0.2.21"):
        servers.down(address)
    first = cli("failover", "kvm1", "--yes", *common, port=servers.port, kill=("write_config", "done"))
    assert first.returncode == -signal.SIGKILL, first.stderr
    pending = Journal(state_dir).pending()
    assert pending is not None and pending.next_step is not None and pending.next_step.value == "up"
    assert load_topology(stack_file).failed_hosts == ("kvm1",)  # the config was written
    assert fence_log.read_text().split() == ["kvm1"]
    calls_before = standin.commands()
    assert [c[:2] for c in calls_before][-2:] == [["stack", "export"], ["stack", "import"]]

    # The restart: the servers of the new topology answer; `run --once` resumes and finishes.
    servers.serve(load_topology(stack_file))
    second = cli("run", "--once", *common, port=servers.port)
    assert second.returncode == 0, second.stderr
    assert "resuming at step up" in second.stderr
    after = standin.commands()[len(calls_before):]
    assert [c[0] for c in after if c[0] != "--non-interactive"] == [
        "version", "stack", "up", "stack", "stack", "stack"]
    assert not [c for c in after if c[:2] in (["stack", "export"], ["stack", "import"])]
    assert fence_log.read_text().split() == ["kvm1"]  # fenced once, not again
    entries = Journal(state_dir).entries()
    steps = [(e["step"], e["status"]) for e in entries if e.get("event") == "step"]
    assert steps == [(s, st) for s in ("fence", "prune_state", "write_config", "up", "verify")
                     for st in ("started", "done")]
    assert entries[-1]["event"] == "finished" and entries[-1]["outcome"] == "ok"
    assert Journal(state_dir).pending() is None
    assert topology.nodes["db1"].host == "kvm1"
    assert load_topology(stack_file).nodes["db1"].host == "spare1"
    json.dumps(entries)  # every entry is plain JSON
