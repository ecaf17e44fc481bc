"""Several `mac-watchdog run` processes on one stack, beside a real etcd cluster: the project dir
(stack file) and the STAND-IN pulumi's root (its "backend": state.json) are shared by all, each
has its own state dir (journal, lock). Used by the leadership tests and bench/leader.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components.stack_file import stack_path
from tests.watchdog.seams import cli_command
from watchdog.etcd import Etcd, EtcdError
from watchdog.leader import leadership_report

REPO = Path(__file__).resolve().parents[2]
STACK = "test"

# The fence of kvm1: log who fenced and when; hang while HOLD exists (a slow BMC).
FENCE_SCRIPT = """#!/bin/sh
echo "$MAC_WD start $(date +%s.%N) $1" >> {log}
while [ -e {hold} ]; do sleep 0.05; done
echo "$MAC_WD end $(date +%s.%N) $1" >> {log}
"""


def wait_until(what: str, predicate: Callable[[], Any], timeout_s: float, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(every_s)


class Fleet:
    def __init__(self, project: Path, root: Path, pulumi_root: Path, probe_port: int,
                 etcd_urls: str, ttl_s: int = 3, renew_s: float = 0.5) -> None:
        self.project = project
        self.root = root
        self.pulumi_root = pulumi_root
        self.probe_port = probe_port
        self.etcd_urls = etcd_urls
        self.ttl_s = ttl_s
        self.fence_log = root / "fence.log"
        self.hold = root / "fence.hold"
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.exited: dict[str, float] = {}
        self.etcd = Etcd(etcd_urls.split(","), timeout_s=2.0)
        script = root / "fence.sh"
        script.write_text(FENCE_SCRIPT.format(log=self.fence_log, hold=self.hold))
        script.chmod(0o755)
        path = stack_path(project, STACK)
        text = path.read_text().replace('address: 127.0.1.1, fence: "true"',
                                        f'address: 127.0.1.1, fence: "{script} kvm1"')
        # Slower rounds than the single-watchdog tests: three watchdogs share two cores.
        text = text.replace("interval: 0.05", "interval: 0.2\n    suspectInterval: 0.1")
        text = text.replace("verifyTimeout: 3", f"verifyTimeout: 20\n    leaseTtl: {ttl_s}\n"
                            f"    leaseRenew: {renew_s}")
        path.write_text(text)

    def start(self, name: str, etcd: str | None = None, kill: tuple[str, str] | None = None) -> None:
        argv = [*cli_command(self.probe_port, kill), "run", "--stack", STACK,
                "--project-dir", str(self.project), "--state-dir", str(self.state_dir(name)),
                "--pulumi-root", str(self.pulumi_root), "--etcd", etcd or self.etcd_urls,
                "--name", name]
        with open(self.root / f"{name}.log", "w") as log:  # the child keeps its copy
            self.procs[name] = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                text=True, env={**os.environ, "MAC_WD": name})

    def state_dir(self, name: str) -> Path:
        return self.root / "state" / name

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def report(self) -> dict[str, Any]:
        try:
            return leadership_report(self.etcd, STACK)
        except EtcdError:
            return {"leader": None, "watchdogs": [], "openRemediation": None}

    def leader(self) -> str | None:
        leader = self.report()["leader"]
        return None if leader is None else str(leader["name"])

    def wait_leader(self, name: str | None = None, timeout_s: float = 60.0) -> str:
        return str(wait_until(f"leader {name or 'any'}", lambda: (
            self.leader() if name is None or self.leader() == name else None), timeout_s, 0.1))

    def wait_views(self, count: int, timeout_s: float = 60.0) -> None:
        wait_until(f"{count} watchdog views", lambda: len(self.report()["watchdogs"]) >= count,
                   timeout_s, 0.1)

    def poll_exits(self) -> None:
        for name, proc in self.procs.items():
            if name not in self.exited and proc.poll() is not None:
                self.exited[name] = time.time()

    def wait_exit(self, name: str, timeout_s: float) -> int:
        def gone() -> bool:
            self.poll_exits()
            return name in self.exited
        wait_until(f"{name} exits", gone, timeout_s, 0.02)
        code = self.procs[name].returncode
        assert code is not None
        return code

    def remediations(self) -> list[dict[str, Any]]:
        return [kv.json() for kv in self.etcd.prefix(f"/mac/{STACK}/remediations/")]

    def wait_remediated(self, timeout_s: float = 90.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            with contextlib.suppress(EtcdError):
                return next((r for r in self.remediations() if r.get("outcome") == "ok"), None)
            return None
        return dict(wait_until("a finished remediation", done, timeout_s, 0.1))

    def step_records(self) -> list[dict[str, Any]]:
        """Every step attempt any watchdog recorded in etcd, in the order they started."""
        return sorted((kv.json() for kv in self.etcd.prefix(f"/mac/{STACK}/steps/")),
                      key=lambda r: r["started_at"])

    def fences(self) -> list[tuple[str, str, float]]:
        """(watchdog, start|end, time) per line the fence script wrote."""
        if not self.fence_log.exists():
            return []
        out = []
        for line in self.fence_log.read_text().splitlines():
            who, what, at, _host = line.split()
            out.append((who, what, float(at)))
        return out

    def ups(self) -> list[dict[str, Any]]:
        path = self.pulumi_root / "ups.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def journal(self, name: str) -> list[dict[str, Any]]:
        path = self.state_dir(name) / "journal.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.etcd.close()


def held_at_once(records: list[dict[str, Any]], ends: dict[tuple[str, str], float]) -> list[str]:
    """Pairs of step attempts by different watchdogs whose holds overlap. A hold runs from its
    start to its end; an attempt never ended in etcd ends where `ends[(holder, step)]` says (the
    holder's own journal: when it stopped acting), else it is open-ended."""
    problems = []
    spans = []
    for r in records:
        end = r.get("ended_at") or ends.get((r["holder"], r["step"]), float("inf"))
        spans.append((r["started_at"], end, r["holder"], r["step"], r["token"]))
    for i, a in enumerate(spans):
        for b in spans[i + 1:]:
            if a[2] != b[2] and a[0] < b[1] and b[0] < a[1]:
                problems.append(f"{a[2]} {a[3]} (token {a[4]}) overlaps {b[2]} {b[3]} (token {b[4]})")
    return problems
