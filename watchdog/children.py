"""The watchdog's child processes (the fence command, the Pulumi CLI): each in a process group of
its own, recorded in the state directory while it runs, bounded by a timeout.

A watchdog killed mid-step leaves its child running; the record lets the restarted one find that
orphan and end it (or see that it is gone) before it repeats the step, so two `pulumi up`s or two
fences never run side by side. A child that outlives its timeout gets SIGINT (Pulumi cancels the
update cleanly and releases the stack's lock), then SIGKILL after a grace period. A watchdog that
must stop at once (a leader that lost its lease, watchdog.leader) kills the groups of the
children it still runs (`kill_running`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The groups this process started and has not seen end (pid -> its start ticks), whatever
# Children instance started them: what `kill_running` kills.
_running: dict[int, int | None] = {}
_running_lock = threading.Lock()

CHILD_FILE = "child.json"
DEFAULT_GRACE_S = 30.0
POLL_S = 0.05


class ChildTimedOut(Exception):
    """A child ran past its timeout and was ended (its group got SIGINT, then SIGKILL)."""


@dataclass(frozen=True)
class ChildRecord:
    """Which child runs: enough to find it again and to tell it from a process that reused its pid."""

    pid: int
    what: str  # "pulumi up", "fence kvm1" (no arguments: they may carry credentials)
    started_ticks: int  # /proc/PID/stat field 22: the same pid with other ticks is another process


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_running() -> list[int]:
    """SIGKILL, at once and without a grace period, the process group of every child this process
    started that still runs (fence commands, the Pulumi CLI and their own children); their pids.
    For a leader deposed mid-step: it must stop before etcd can expire its lease."""
    with _running_lock:
        running = dict(_running)
    killed = []
    for pid, ticks in running.items():
        now = _start_ticks(pid)
        if ticks is not None and now is not None and now != ticks:
            continue  # the pid names another process now: ours ended and was reaped elsewhere
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    return killed


def _started(pid: int, ticks: int | None) -> None:
    with _running_lock:
        _running[pid] = ticks


def _ended(pid: int) -> None:
    with _running_lock:
        _running.pop(pid, None)


class Children:
    """Starts children in their own process group and keeps the record in `state_dir`."""

    def __init__(self, state_dir: str | Path | None, grace_s: float = DEFAULT_GRACE_S,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`state_dir` None: children get their own group but no record (nothing to resume)."""
        self.path = Path(state_dir) / CHILD_FILE if state_dir is not None else None
        self.grace_s = grace_s
        self.sleep = sleep

    # -- the record ---------------------------------------------------------------------------

    def _write(self, record: ChildRecord) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(record)))
            os.replace(tmp, self.path)
        except OSError as err:
            # The child runs anyway; only a restart could not find it (the state dir is alerted
            # by the journal, which needs it too).
            log.warning("cannot record the child %s in %s: %s", record.what, self.path, err.strerror)

    def forget(self, pid: int) -> None:
        """`pid` ended: drop its record (a caller that waited for it itself)."""
        _ended(pid)
        self._clear(pid)

    def _clear(self, pid: int) -> None:
        record = self.recorded()
        if record is not None and record.pid == pid and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def recorded(self) -> ChildRecord | None:
        if self.path is None:
            return None
        try:
            raw = json.loads(self.path.read_text())
            return ChildRecord(int(raw["pid"]), str(raw["what"]), int(raw["started_ticks"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable: nothing we could safely signal

    def orphan(self) -> ChildRecord | None:
        """The recorded child, if that very process still runs (an earlier watchdog's orphan)."""
        record = self.recorded()
        if record is None:
            return None
        if _start_ticks(record.pid) != record.started_ticks:
            self._clear(record.pid)  # it ended (or its pid now names another process)
            return None
        return record

    def end_orphan(self) -> ChildRecord | None:
        """End the orphan an earlier watchdog left running (SIGINT, then SIGKILL); which it was."""
        record = self.orphan()
        if record is None:
            return None
        self.end_group(record.pid)
        self._clear(record.pid)
        return record

    def end_group(self, pgid: int) -> None:
        """SIGINT to the group, SIGKILL after the grace period; returns once the group is gone."""
        for sig, wait_s in ((signal.SIGINT, self.grace_s), (signal.SIGKILL, self.grace_s)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + wait_s
            while _group_alive(pgid) and time.monotonic() < deadline:
                self._reap(pgid)
                self.sleep(POLL_S)
            self._reap(pgid)
            if not _group_alive(pgid):
                return

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    # -- running ------------------------------------------------------------------------------

    def popen(self, argv: Sequence[str] | str, what: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a child in its own session (and process group) and record it."""
        proc: subprocess.Popen[Any] = subprocess.Popen(argv, start_new_session=True, **kwargs)
        ticks = _start_ticks(proc.pid)
        _started(proc.pid, ticks)
        if ticks is not None:
            self._write(ChildRecord(proc.pid, what, ticks))
        return proc

    def wait(self, proc: subprocess.Popen[Any], timeout_s: float | None) -> int:
        """Wait for `proc`; ChildTimedOut (its group ended) when it outlives `timeout_s`."""
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.end_group(proc.pid)
            proc.wait()
            raise ChildTimedOut(f"ran longer than {timeout_s:g} s and was stopped") from None
        finally:
            if proc.returncode is not None:
                _ended(proc.pid)
                self._clear(proc.pid)
