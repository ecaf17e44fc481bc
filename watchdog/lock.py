"""One remediation per stack at a time: an exclusive, non-blocking lock file (released if we die).

The lock sits beside the stack file (`stacks/.Pulumi.<stack>.yaml.lock`), not in a state
directory: two MAC processes with different `--state-dir`s still exclude each other.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from watchdog.errors import LockHeld, LockUnavailable

LOCK_FILE = "remediate.lock"


def stack_lock_path(stack_file: str | Path) -> Path:
    """Where the lock of the stack in `stack_file` lives (hidden, beside it)."""
    stack_file = Path(stack_file)
    return stack_file.with_name(f".{stack_file.name}.lock")


class RemediationLock:
    def __init__(self, directory: str | Path, name: str = LOCK_FILE) -> None:
        self.path = Path(directory) / name
        self._fd: int | None = None

    @classmethod
    def for_stack(cls, stack_file: str | Path) -> RemediationLock:
        path = stack_lock_path(stack_file)
        return cls(path.parent, path.name)

    def __enter__(self) -> RemediationLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise LockUnavailable(f"cannot create the lock {self.path}: {err.strerror}; the stacks "
                                  "directory must be writable for the watchdog to act") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(f"another remediation of this stack is running (pid {holder}, lock "
                           f"{self.path}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
