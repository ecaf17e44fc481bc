"""Children: own process group, recorded while running, ended at the timeout; orphans found again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from watchdog.children import Children, ChildTimedOut, _group_alive, kill_running

SLEEPER = [sys.executable, "-c", "import time, subprocess, sys; "
           "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"]


def test_a_child_past_its_timeout_is_ended_with_its_whole_group(tmp_path: Path) -> None:
    children = Children(tmp_path, grace_s=2.0)
    proc = children.popen(SLEEPER, "sleeper")
    record = children.recorded()
    assert record is not None and record.pid == proc.pid
    started = time.monotonic()
    with pytest.raises(ChildTimedOut, match=r"longer than 0\.5 s"):
        children.wait(proc, 0.5)
    assert time.monotonic() - started < 5
    assert not _group_alive(proc.pid)  # the grandchild went too
    assert children.recorded() is None


def test_a_resumed_watchdog_ends_the_orphan_its_predecessor_left(tmp_path: Path) -> None:
    """The first watchdog dies (SIGKILL) while its child runs: the record stays behind."""
    first = Children(tmp_path, grace_s=2.0)
    proc = first.popen(SLEEPER, "pulumi up")
    second = Children(tmp_path, grace_s=2.0)
    orphan = second.orphan()
    assert orphan is not None and orphan.what == "pulumi up"
    assert second.end_orphan() == orphan
    proc.wait(5)
    assert not _group_alive(proc.pid)
    assert second.orphan() is None and second.recorded() is None


def test_a_finished_child_or_a_reused_pid_is_no_orphan(tmp_path: Path) -> None:
    children = Children(tmp_path)
    proc = children.popen([sys.executable, "-c", "pass"], "quick")
    assert children.wait(proc, 10) == 0
    assert children.orphan() is None
    (tmp_path / "child.json").write_text('{"pid": 1, "what": "x", "started_ticks": 0}')
    assert children.orphan() is None  # pid 1 started at another tick: not ours
    assert not (tmp_path / "child.json").exists()
    subprocess.run(["true"], check=True)


def test_kill_running_kills_every_group_this_process_started_at_once(tmp_path: Path) -> None:
    """A leader deposed mid-step (watchdog.leader): no SIGINT and grace period, the whole group."""
    recorded = Children(tmp_path).popen(SLEEPER, "pulumi up")
    unrecorded = Children(None).popen(SLEEPER, "fence kvm1")
    done = Children(None).popen([sys.executable, "-c", "pass"], "quick")
    assert Children(None).wait(done, 10) == 0
    started = time.monotonic()
    assert sorted(kill_running()) == sorted([recorded.pid, unrecorded.pid])
    for proc in (recorded, unrecorded):
        proc.wait(5)
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(proc.pid)  # the grandchild went too
    assert time.monotonic() - started < 5
