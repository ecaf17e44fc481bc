"""One vm stack per machine: the process that owns it holds an flock on /tmp/mac-vm.lock.

The kernel drops the lock when its holder dies, so a stale lock is taken over by itself; the file
names the holder (pid, since when) for the refusal message.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_PATH = Path("/tmp/mac-vm.lock")


class SiteBusy(RuntimeError):
    """Another live process holds the vm stack."""


@dataclass(frozen=True)
class Holder:
    pid: int
    started: float

    def describe(self) -> str:
        return f"pid {self.pid}, started {time.strftime('%H:%M:%S', time.localtime(self.started))}"


def read_holder(path: Path = LOCK_PATH) -> Holder | None:
    try:
        raw = json.loads(path.read_text())
        return Holder(int(raw["pid"]), float(raw["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SiteLock:
    """`acquire()` or SiteBusy; `release()`."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        # os.open's descriptors are not inherited (PEP 446): the daemons never hold the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path)
            who = holder.describe() if holder else "holder unknown"
            raise SiteBusy(f"a vm stack is already running ({who}); `make vm-down` first") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started": time.time()}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # emptied, not unlinked: a waiter would lock a file nobody sees
        os.close(self._fd)
        self._fd = None


def live_holder(path: Path = LOCK_PATH) -> Holder | None:
    """The live process holding the lock, or None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path) or Holder(-1, 0.0)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
