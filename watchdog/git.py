"""`run --git-commit [--git-push]`: make every stack file the watchdog writes durable in git.

A later `pulumi up` from git (CI, a colleague) then deploys the failover, not the file from before
it. Git failing never stops a remediation: it is alerted, and the stack file stays written.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watchdog.plan import Plan
from watchdog.reasons import Reason

GIT_TIMEOUT_S = 60.0
AUTHOR = "mac-watchdog <mac-watchdog@localhost>"


class Alerts(Protocol):
    def alert(self, event: str, message: str, *, reason: Reason, **details: object) -> bool: ...


def commit_message(p: Plan) -> str:
    """What moved where and why: the subject line for people, the lines after it for review."""
    lines = [f"mac-watchdog: {p.reason}"[:200], ""]
    lines += [f"move {m.node}: {m.from_host} -> {m.to_host}" for m in p.moves]
    lines += [f"replace in place: {n}" for n in p.replace]
    lines += [f"fenced: {h}" for h in p.fence]
    lines += [f"mac:spares: {list(p.topology.spares)}",
              f"mac:failedHosts: {list(p.topology.failed_hosts)}",
              f"reason code: {p.code.value}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class GitRecorder:
    stack_file: Path
    push: bool = False
    timeout_s: float = GIT_TIMEOUT_S

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}  # never wait for a password prompt
        return subprocess.run(["git", "-C", str(self.stack_file.parent), *args], capture_output=True,
                              text=True, timeout=self.timeout_s, env=env, check=False)

    def commit(self, p: Plan, alerts: Alerts) -> bool:
        """Commit the stack file alone (and push); False, alerted, when git fails."""
        name = self.stack_file.name
        steps = [("add", "--", name),
                 ("-c", f"user.name={AUTHOR.split(' <')[0]}", "-c",
                  f"user.email={AUTHOR.split('<')[1].rstrip('>')}", "commit", "--quiet",
                  "-m", commit_message(p), "--", name)]
        if self.push:
            steps.append(("push", "--quiet"))
        for args in steps:
            try:
                proc = self._git(*args)
            except (OSError, subprocess.TimeoutExpired) as err:
                return self._failed(alerts, args, type(err).__name__)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines()
                        or ["no output"])[-1]
                return self._failed(alerts, args, last[:200])
        return True

    def _failed(self, alerts: Alerts, args: tuple[str, ...], why: str) -> bool:
        verb = next(a for a in args if a in ("add", "commit", "push"))
        alerts.alert("git_failed", f"`git {verb}` of {self.stack_file.name} failed ({why}); the stack "
                     "file is written but not in git: commit it by hand before anyone deploys from git",
                     reason=Reason.GIT_FAILED)
        return False
