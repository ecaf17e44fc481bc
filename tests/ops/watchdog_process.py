"""A real `mac-watchdog run` in a child process on a loopback test stack, its probes sent to a
port where nothing listens (tests/watchdog/seams.py), so every target is down."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.netutil import free_port
from tests.unit.harness import PROJECT_DIR
from tests.watchdog.loopback_stack import TEST_STACK
from tests.watchdog.seams import cli_command

NO_SPARE_STACK = (TEST_STACK.replace("  mac:spares: [spare1]\n", "  mac:spares: []\n")
                  .replace('    spare1: {uri: "qemu+ssh://root@127.0.1.21/system", address: 127.0.1.21, '
                           'fence: "true"}\n', ""))


def project(root: Path, stack_text: str = TEST_STACK) -> Path:
    (root / "stacks").mkdir(parents=True)
    shutil.copy(PROJECT_DIR / "Pulumi.yaml", root / "Pulumi.yaml")
    (root / "stacks" / "Pulumi.test.yaml").write_text(stack_text)
    return root


class WatchdogProcess:
    def __init__(self, project_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.stderr_path = project_dir / "watchdog.stderr"
        self.stderr = self.stderr_path.open("w")
        argv = [*cli_command(free_port()), "run", "--dry-run", "--stack", "test",
                "--project-dir", str(project_dir), "--state-dir", str(project_dir / "state"), *args]
        self.proc = subprocess.Popen(argv, cwd=PROJECT_DIR, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, env={**os.environ, **(env or {})})

    def interrupt(self, timeout_s: float = 20) -> tuple[int, str]:
        """Ctrl-C, as systemd's KillSignal=SIGINT; the exit code and what it said on stderr."""
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=timeout_s)
        self.stderr.close()
        return code, self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
