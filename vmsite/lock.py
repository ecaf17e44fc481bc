"""One vm stack per machine: the process that owns it holds an flock on /tmp/mac-vm.lock.

The kernel drops the lock when its holder dies, so a stale lock is taken over by itself; the file
names the holder (pid, since when) for the refusal message. The lock itself is the lab's
(`lab.lock.OwnerLock`).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lab.lock import Holder, OwnerLock, read_holder

LOCK_PATH = Path("/tmp/mac-vm.lock")


class SiteBusy(RuntimeError):
    """Another live process holds the vm stack."""


class SiteLock(OwnerLock):
    """`acquire()` or SiteBusy; `release()`."""

    def __init__(self, path: Path = LOCK_PATH) -> None:
        super().__init__(path, lambda who: SiteBusy(
            f"a vm stack is already running ({who}); `make vm-down` first"))

    def acquire(self, what: str = "vm stack") -> None:
        super().acquire(what)


def live_holder(path: Path = LOCK_PATH) -> Holder | None:
    """The live process holding the lock, or None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path) or Holder(-1, 0.0, "")
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
