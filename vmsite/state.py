"""The vm stack's run directory (git-ignored `.vm/`) and what is recorded in it.

Everything machine-specific lives here: the SSH key pair (hosts and VMs), the passphrase of the
stack's secrets, each host's libvirtd/sshd directories, the Pulumi home and file backend, the
working copy of the project (where pulumi and the watchdog run) and `state.json`: the namespace
and every PID started, so `down` cleans up after a crash too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.stack_file import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
STACK = "vm"


def default_run_dir() -> Path:
    return Path(os.environ.get("MAC_VM_DIR", REPO / ".vm"))


@dataclass
class Recorded:
    """What `up` started: the namespaces (the switch's, the hosts') and the PIDs (name -> pid)."""

    netns: str
    pids: dict[str, int] = field(default_factory=dict)
    host_namespaces: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def key(self) -> Path:
        return self.root / "ssh" / "id_ed25519"

    @property
    def passphrase_file(self) -> Path:
        return self.root / "passphrase"

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def stack_file(self) -> Path:
        return self.project / "stacks" / f"Pulumi.{STACK}.yaml"

    @property
    def pulumi_home(self) -> Path:
        return self.root / "pulumi" / "home"

    @property
    def backend(self) -> Path:
        return self.root / "pulumi" / "state"

    @property
    def watchdog_state(self) -> Path:
        return self.root / "watchdog"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def host_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

    def load(self) -> Recorded | None:
        try:
            raw = json.loads(self.state_file.read_text())
            return Recorded(str(raw["netns"]), {str(k): int(v) for k, v in raw["pids"].items()},
                            [str(n) for n in raw.get("host_namespaces", [])])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save(self, recorded: Recorded) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.state_file, json.dumps(asdict(recorded), indent=1) + "\n")
