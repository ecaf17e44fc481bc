"""One lab per machine: the process that brings a lab up holds a lock until it tears it down.

An flock on a file beside the lab directory (the kernel drops it when the holder dies, so a
stale lock is taken over by itself); the file names the holder for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.netns import LabError
from lab.state import lab_dir


class LabBusy(LabError):
    """Another live process holds the lab."""


@dataclass(frozen=True)
class Holder:
    pid: int
    started: float  # epoch seconds
    what: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid}, started {when}, {self.what}"


def lock_path(directory: Path | None = None) -> Path:
    """`/var/tmp/mac-lab.lock` beside `/var/tmp/mac-lab` (the directory itself is removed by `down`)."""
    directory = directory or lab_dir()
    return directory.with_name(directory.name + ".lock")


def read_holder(path: Path) -> Holder | None:
    try:
        raw = json.loads(path.read_text())
        return Holder(int(raw["pid"]), float(raw["started"]), str(raw.get("what", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OwnerLock:
    """An flock on `path` naming its holder: `acquire(what)` or the error `busy(who)` makes;
    `release()`; `stale` says whose dead lock was taken over. The lab and the vm stack each
    hold one (vmsite/lock.py)."""

    def __init__(self, path: Path, busy: Callable[[str], Exception]) -> None:
        self.path = path
        self._busy = busy
        self._fd: int | None = None
        self.stale: Holder | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, what: str) -> None:
        if self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # os.open's descriptors are not inherited (PEP 446): daemons the holder starts never hold it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            raise self._busy(holder.describe() if holder else "holder unknown") from None
        previous = read_holder(self.path)
        self.stale = previous if previous and previous.pid != os.getpid() else None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": time.time(), "what": what}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        # Emptied, not unlinked: a process waiting on the old inode would lock a file nobody sees.
        os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


class LabLock(OwnerLock):
    """The lab's lock, beside the lab directory."""

    def __init__(self, directory: Path | None = None) -> None:
        super().__init__(lock_path(directory), lambda who: LabBusy(
            f"a lab is already running ({who}); `make lab-down` first"))


def current_holder(directory: Path | None = None) -> Holder | None:
    """The live process holding the lab, or None (no lock, or its holder is gone)."""
    path = lock_path(directory)
    holder = read_holder(path)
    if holder is None or not pid_alive(holder.pid):
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder
    finally:
        os.close(fd)  # closing drops a lock we may just have taken
    return None
