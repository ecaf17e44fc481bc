"""`mac-lab`'s parts that need no lab: the lab lock (a real flock, held by real processes), the
live view rendered to a string from a made-up snapshot, HAProxy's `show stat` and the watchdog's
journal/log parsed, and the CLI's argument checks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from rich.console import Console

from lab.cli import parse_delay_ms, rate_line
from lab.load import Outcome
from lab.lock import LabBusy, LabLock, current_holder, lock_path
from lab.status import Backend, HostView, NodeView, Snapshot, parse_show_stat, render, watchdog_last

HOLD = """
import sys, time
from pathlib import Path
from lab.lock import LabLock
LabLock(Path(sys.argv[1])).acquire("holder under test")
print("held", flush=True)
time.sleep(60)
"""


def hold_in_another_process(lab_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lab_dir)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_lab_is_refused_naming_the_live_holder_and_a_dead_holders_lock_is_taken_over(
        tmp_path: Path) -> None:
    lab_dir = tmp_path / "mac-lab"
    holder = hold_in_another_process(lab_dir)
    try:
        with pytest.raises(LabBusy) as refused:
            LabLock(lab_dir).acquire("second lab")
        assert str(refused.value).startswith(f"a lab is already running (pid {holder.pid}, started ")
        assert str(refused.value).endswith("holder under test); `make lab-down` first")
        found = current_holder(lab_dir)
        assert found is not None and found.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: its pid is still in the file, the kernel dropped the lock.
    assert json.loads(lock_path(lab_dir).read_text())["pid"] == holder.pid
    assert current_holder(lab_dir) is None
    lock = LabLock(lab_dir)
    lock.acquire("third lab")
    assert lock.stale is not None and lock.stale.pid == holder.pid
    assert json.loads(lock_path(lab_dir).read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.held and current_holder(lab_dir) is None


def test_the_lock_is_not_inherited_by_the_daemons_a_lab_starts(tmp_path: Path) -> None:
    lock = LabLock(tmp_path / "mac-lab")
    lock.acquire("lab")
    child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        lock.release()
        again = LabLock(tmp_path / "mac-lab")
        again.acquire("next lab")  # a daemon still running must not keep the lab locked
        assert again.stale is None  # released cleanly: nothing to take over
        again.release()
    finally:
        child.kill()
        child.wait()


SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,"
    "status,weight\n"
    """app,FRONTEND,,,0,1,2000,5,0,0,0,0,0,,,,,OPEN,
web,web1,0,0,0,1,,3,0,0,,0,,0,0,0,0,UP,1
web,web2,0,0,0,1,,2,0,0,,0,,0,0,0,0,DOWN,1
web,BACKEND,0,0,0,1,200,5,0,0,0,0,,0,0,0,0,UP,1
mysql,db1,0,0,0,1,,3,0,0,,0,,0,0,0,0,UP 1/2,1
""")


def test_show_stat_yields_each_server_and_its_state() -> None:
    assert parse_show_stat(SHOW_STAT) == [Backend("web", "web1", "UP"), Backend("web", "web2", "DOWN"),
                                          Backend("mysql", "db1", "UP 1/2")]
    assert parse_show_stat("") == []


def test_the_watchdogs_newest_decision_is_read_from_its_json_log_and_journal(tmp_path: Path) -> None:
    assert watchdog_last(tmp_path) == f"no decision yet in {tmp_path}"
    (tmp_path / "log.jsonl").write_text("\n".join([
        json.dumps({"ts": 100.0, "event": "health", "target": "web1"}),
        json.dumps({"ts": 101.0, "event": "decision", "action": "replace", "dry_run": True,
                    "reason": "node web1 failed"}),
        "not json",
    ]) + "\n")
    assert watchdog_last(tmp_path, now=105.0) == "4 s ago: decision replace (dry run): node web1 failed"
    (tmp_path / "journal.jsonl").write_text(
        json.dumps({"ts": 103.0, "event": "step", "id": "r1", "step": "fence", "status": "done"}) + "\n")
    assert watchdog_last(tmp_path, now=105.0) == "2 s ago: step fence done"


def snapshot(web1: int | None, link: bool) -> Snapshot:
    synced = {"local_state_comment": "Synced", "cluster_size": "3", "cluster_status": "Primary"}
    return Snapshot(
        at=time.time(),
        nodes=[NodeView("db1", "mysql", "lab1", "10.254.50.11", True, 200, synced),
               NodeView("web1", "web", "lab1", "10.254.50.21", link, web1)],
        hosts=[HostView("lab1", "host", "10.254.50.201", True, True, False)],
        backends=[Backend("web", "web1", "UP" if web1 == 200 else "DOWN")],
        watchdog="1 s ago: decision replace (dry run): node web1 failed")


def rendered(snap: Snapshot) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render(snap))
    return out.getvalue().splitlines()


def row(lines: list[str], name: str) -> list[str]:
    line = next(ln for ln in lines if ln.startswith(f"│ {name} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_the_view_shows_health_link_galera_and_backends_per_node_and_the_watchdog() -> None:
    lines = rendered(snapshot(200, True))
    assert row(lines, "db1") == ["db1", "mysql", "lab1", "10.254.50.11", "up", "200", "Synced Primary",
                                 "3", ""]
    assert row(lines, "web1")[4:] == ["up", "200", "", "", "UP"]
    assert row(lines, "lab1") == ["lab1", "host", "10.254.50.201", "up", "open", "reachable"]
    assert lines[-1] == "watchdog: 1 s ago: decision replace (dry run): node web1 failed"
    assert row(rendered(snapshot(None, False)), "web1")[4:] == ["cut", "down", "", "", "DOWN"]


def test_delays_read_as_milliseconds_or_seconds_and_garbage_exits_2() -> None:
    assert parse_delay_ms("200ms") == 200
    assert parse_delay_ms("0.5s") == 500
    assert parse_delay_ms("150") == 150
    with pytest.raises(typer.Exit) as bad:
        parse_delay_ms("fast")
    assert bad.value.exit_code == 2


def test_the_load_line_shows_the_windows_rate_failures_and_p99() -> None:
    window = [Outcome(i, f"t-{i}", 0.0, (i + 1) / 1000, 200) for i in range(99)]
    window.append(Outcome(99, "t-99", 0.0, 1.0, None, "ConnectionRefusedError"))
    line = rate_line(3.0, window, total=300, failed=1, span=1.0)
    assert line == "   3.0 s    100.0 req/s  failed   1  p99    99.0 ms  | total 300 requests, 1 failed"
