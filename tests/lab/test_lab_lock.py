"""The lab lock with real labs (root only; skipped otherwise): `python -m lab up` (what `make lab`
runs) as a process, SIGKILLed so that it leaves its lock and its daemons behind; the next `up`
takes the dead holder's lock over, removes the leftovers, comes up, and cleans up on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.lock import current_holder, read_holder
from lab.netns import namespaces
from lab.requirements import skip_reason
from lab.state import NS_PREFIX, REPO, lab_dir

pytestmark = pytest.mark.lab


def start_up(log: Path) -> subprocess.Popen[str]:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "lab", "up", "--no-watch"], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, text=True)


def wait_line(log: Path, text: str, proc: subprocess.Popen[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        assert proc.poll() is None, f"lab up exited {proc.returncode}: {log.read_text()[-2000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {timeout_s} s: {log.read_text()[-2000:]}")


def test_a_dead_labs_lock_is_taken_over_and_its_leftovers_removed(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    first = start_up(tmp_path / "first.log")
    second = None
    try:
        wait_line(tmp_path / "first.log", "cluster up in", first)
        holder = current_holder()
        assert holder is not None and holder.pid == first.pid
        first.kill()  # no cleanup at all: lock file, namespaces and daemons stay behind
        first.wait()
        stale = read_holder(Path(f"{lab_dir()}.lock"))
        assert stale is not None and stale.pid == first.pid and current_holder() is None
        assert any(ns.startswith(NS_PREFIX) for ns in namespaces())

        second = start_up(tmp_path / "second.log")
        wait_line(tmp_path / "second.log", "cluster up in", second)
        text = (tmp_path / "second.log").read_text()
        assert f"took over the lock of a lab that is gone (pid {first.pid}, started " in text
        holder = current_holder()
        assert holder is not None and holder.pid == second.pid
        second.send_signal(signal.SIGTERM)  # what `make lab-down` sends the holder
        assert second.wait(60) == 0
        assert "removed directory" in (tmp_path / "second.log").read_text()
        assert not [ns for ns in namespaces() if ns.startswith(NS_PREFIX)]
        assert current_holder() is None and not lab_dir().exists()
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(60)
        subprocess.run([sys.executable, "-m", "lab", "down"], cwd=REPO, capture_output=True,
                       check=False, timeout=120)
