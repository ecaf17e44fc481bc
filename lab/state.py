"""What the lab created, on disk, so `down` can remove all of it, also after a crash.

Every namespace, veth, bridge, process and directory is recorded *before* or right after it is
made; the file is rewritten atomically on each change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Not inside the checkout: the daemons run as their own users (mysql, www-data), and a checkout
# may sit below a directory only root can enter (a clone in a `mktemp -d` is 0700). There is one
# lab per machine anyway (one bridge, one namespace prefix).
DEFAULT_DIR = Path("/var/tmp/mac-lab")
NS_PREFIX = "maclab-"  # every lab namespace carries it; `down` also removes strays by it


def lab_dir() -> Path:
    return Path(os.environ.get("MAC_LAB_DIR", DEFAULT_DIR))


@dataclass
class Proc:
    """A process the lab started: killed by PID and process group, checked by its start time."""

    pid: int
    pgid: int
    start_ticks: int
    node: str
    what: str


@dataclass
class LabState:
    path: Path
    bridge: str | None = None
    namespaces: list[str] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)
    etc_netns: list[str] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # `ip rule` selectors cutting the root namespace off

    @classmethod
    def load(cls, directory: Path) -> LabState:
        path = directory / "state.json"
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return cls(path)
        return cls(path, raw.get("bridge"), raw.get("namespaces", []), raw.get("veths", []),
                   raw.get("etc_netns", []), [Proc(**p) for p in raw.get("procs", [])],
                   raw.get("rules", []))

    def reload(self) -> None:
        """Read the file again: another process (`mac-lab revive`, say) may have recorded more."""
        fresh = LabState.load(self.path.parent)
        self.bridge, self.namespaces, self.veths = fresh.bridge, fresh.namespaces, fresh.veths
        self.etc_netns, self.procs, self.rules = fresh.etc_netns, fresh.procs, fresh.rules

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Read-modify-write under a lock: `make lab` and `mac-lab` both record into one file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.reload()
            yield

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = {"bridge": self.bridge, "namespaces": self.namespaces, "veths": self.veths,
               "etc_netns": self.etc_netns, "procs": [asdict(p) for p in self.procs],
               "rules": self.rules}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=1))
        os.replace(tmp, self.path)

    def add(self, kind: str, value: str) -> None:
        with self._locked():
            items: list[str] = getattr(self, kind)
            if value not in items:
                items.append(value)
                self.save()

    def remove(self, kind: str, value: str) -> None:
        with self._locked():
            items: list[str] = getattr(self, kind)
            if value in items:
                items.remove(value)
                self.save()

    def add_proc(self, proc: Proc) -> None:
        with self._locked():
            self.procs.append(proc)
            self.save()


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a recorded process from a later one with the same PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])
