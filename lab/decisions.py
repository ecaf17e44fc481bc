"""The watchdog's decisions on the lab's fault matrix: each fault injected into the live lab while
a real `mac-watchdog run --dry-run --json-log` watches, its decisions compared with the one
expected (tests/lab/test_fault_matrix.py asserts them, bench/decisions.py prints them).

The watchdog runs on a copy of the project whose lab hosts get a fence command that does nothing
(the lab stack sets none, so a host failover there would rightly be refused); a dry run never
fences, writes or deploys anyway. Faults are lab/faults.py's (`mac-lab`'s own primitives). One lab
serves every row: after each row the faults are undone and the cluster must be whole again before
the next row starts (else the lab is rebuilt).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from components.stack_file import load_topology, stack_path, write_topology
from components.topology import Role, Topology
from lab.cluster import Lab
from lab.faults import LabFaults
from lab.load import Load
from lab.netns import LabError
from lab.state import REPO

STACK = "lab"
WATCHDOG = [sys.executable, "-c", "from watchdog.cli import main; main()"]
HARMLESS_FENCE = "true"  # never run by a dry run; lets the planner move the nodes of a dead host
BASELINE_TIMEOUT_S = 20  # the watchdog sees every target healthy, nothing degraded
WINDOW_S = 12.0  # decisions are read this long after each fault (the measurement)
WRITE_RATE = 100  # req/s through the LB for the rows "under writes"
Event = dict[str, Any]


def watchdog_project(root: Path) -> Path:
    """Pulumi.yaml and the stack files copied under `root`; the lab hosts get HARMLESS_FENCE."""
    (root / "stacks").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    for f in (REPO / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(f, root / "stacks" / f.name)
    path = stack_path(root, STACK)
    topology = load_topology(path)
    hosts = {name: replace(h, fence=HARMLESS_FENCE) for name, h in topology.hosts.items()}
    write_topology(path, topology.with_(hosts=hosts))
    return root


class DryRun:
    """`mac-watchdog run --dry-run --json-log` in the background; its log lines, parsed."""

    def __init__(self, project: Path, state_dir: Path, pulumi_root: Path | None = None) -> None:
        self.state_dir = state_dir
        self.events: list[Event] = []
        self.other: list[str] = []  # stderr lines that are not JSON (tracebacks, say)
        self._lock = threading.Lock()
        argv = [*WATCHDOG, "run", "--stack", STACK, "--dry-run", "--json-log", "--project-dir",
                str(project), "--state-dir", str(state_dir)]
        if pulumi_root is not None:
            argv += ["--pulumi-root", str(pulumi_root)]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                with self._lock:
                    self.other.append(line.rstrip())
                continue
            with self._lock:
                self.events.append(entry)

    def of(self, event: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.get("event") == event]

    def wait(self, what: str, found: Callable[[], Event | None], timeout_s: float) -> Event:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = found()
            if hit is not None:
                return hit
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {what} within {timeout_s} s (watchdog exit {self.proc.poll()}); "
                             f"events: {self.events[-15:]}; other output: {self.other[-15:]}")

    def latest(self, key: str) -> Event | None:
        changes = [e for e in self.of("health") if e["target"] == key]
        return changes[-1] if changes else None

    def healthy(self, key: str, settled: bool = False) -> bool:
        """The target's latest change was to healthy (and, `settled`, with nothing degraded)."""
        last = self.latest(key)
        return last is not None and last["state"] == "healthy" and not (settled and last.get("degraded"))

    def wait_all_healthy(self, lab: Lab, settled: bool = False,
                         timeout_s: float = BASELINE_TIMEOUT_S) -> None:
        keys = [f"host:{h}" for h in lab.topology.hosts] + [f"node:{n}" for n in lab.topology.nodes]
        self.wait("every target healthy" + (", nothing degraded" if settled else ""),
                  lambda: {} if all(self.healthy(k, settled) for k in keys) else None, timeout_s)

    def decision(self, timeout_s: float = 20) -> Event:
        return self.wait("decision", lambda: next(iter(self.of("decision")), None), timeout_s)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


def summary(decision: Event) -> str:
    """A decision in a few words, the way the matrix states what it expects."""
    plan, action = decision["plan"], decision["action"]
    if action == "refuse":
        return f"refuse: {decision['code']}"
    if action == "replace":
        return f"replace {', '.join(plan['replace'])}"
    if action == "failover" and plan["moves"]:
        hosts = sorted({m["from"] for m in plan["moves"]})
        to = sorted({m["to"] for m in plan["moves"]})
        text = (f"failover {', '.join(hosts)}: move {', '.join(m['node'] for m in plan['moves'])}"
                f" to {', '.join(to)}")
        return text + (f"; replace {', '.join(plan['replace'])}" if plan["replace"] else "")
    return f"{action}: {decision['code']} {', '.join(decision['failed_hosts'])}".rstrip()


# ---- the matrix ------------------------------------------------------------------------------

Fault = Callable[["Bench"], None]


@dataclass(frozen=True)
class Phase:
    """One fault, and the one decision expected within the window after it."""

    fault: str  # what is done, for people
    inject: Fault
    expected: str  # `summary()` of the expected decision


@dataclass(frozen=True)
class Scenario:
    name: str
    phases: tuple[Phase, ...]
    undo: Fault  # puts the cluster back (every node healthy)
    writes: bool = False  # run write load through the LB during the row


@dataclass
class PhaseResult:
    fault: str
    expected: str
    actual: str | None  # the first decision after the fault, or None
    seconds: float | None  # fault -> that decision
    spurious: list[str] = field(default_factory=list)  # every other decision in the window

    @property
    def correct(self) -> bool:
        return self.actual == self.expected and not self.spurious


@dataclass
class ScenarioResult:
    name: str
    phases: list[PhaseResult]
    load: dict[str, Any] | None = None
    error: str | None = None

    @property
    def correct(self) -> bool:
        return self.error is None and all(p.correct for p in self.phases)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "correct": self.correct,
            "expected": [p.expected for p in self.phases],
            "actual": [p.actual for p in self.phases],
            "seconds_to_decision": [None if p.seconds is None else round(p.seconds, 2)
                                    for p in self.phases],
            "spurious": [s for p in self.phases for s in p.spurious],
            **({"load": self.load} if self.load else {}),
            **({"error": self.error} if self.error else {}),
        }


def kill(*nodes: str) -> Fault:
    def inject(b: Bench) -> None:
        for node in nodes:
            b.faults.kill_node(node)
    return inject


def kill_host(host: str) -> Fault:
    def inject(b: Bench) -> None:
        b.faults.kill_host(host)
    return inject


def stop(node: str) -> Fault:
    def inject(b: Bench) -> None:
        b.faults.stop_service(node)
    return inject


def revive(*nodes: str) -> Fault:
    def undo(b: Bench) -> None:
        b.faults.revive_nodes(list(nodes))
    return undo


def revive_hosts(*hosts: str) -> Fault:
    def undo(b: Bench) -> None:
        for host in hosts:
            b.faults.revive_host(host)
    return undo


def isolate_watchdog(b: Bench) -> None:
    b.lab.isolate_root()


def end_isolation(b: Bench) -> None:
    b.lab.end_isolation()


def partition_from_watchdog(host: str) -> Fault:
    def inject(b: Bench) -> None:
        b.faults.partition_host(host, watchdog_only=True)
    return inject


def heal(host: str) -> Fault:
    def undo(b: Bench) -> None:
        b.faults.heal_host(host)
    return undo


def both(first: Fault, second: Fault) -> Fault:
    def undo(b: Bench) -> None:
        first(b)
        second(b)
    return undo


class Bench:
    """One live lab, the faults on it, and a fresh dry-run watchdog per row."""

    def __init__(self, lab: Lab, workdir: Path | None = None, window_s: float = WINDOW_S) -> None:
        self.lab = lab
        self.faults = LabFaults(lab)
        self.window_s = window_s
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mac-decisions-"))
        self.project = watchdog_project(self.workdir / "project")
        self._runs = 0

    def run(self, scenario: Scenario) -> ScenarioResult:
        """One row: a fresh watchdog, its baseline, each phase's fault and window, then undo."""
        self._runs += 1
        try:
            self.settle()
        except LabError:
            self.rebuild()
        watchdog = DryRun(self.project, self.workdir / f"state-{self._runs}")
        load: Load | None = None
        result = ScenarioResult(scenario.name, [])
        try:
            watchdog.wait_all_healthy(self.lab, settled=True)
            if scenario.writes:
                load = Load(self.lab.url, WRITE_RATE, len(scenario.phases) * self.window_s + 1)
                load.start()
                time.sleep(1.0)
            for phase in scenario.phases:
                result.phases.append(self._phase(watchdog, phase))
        except Exception as err:  # a row that breaks reports it; the next row starts clean
            result.error = f"{type(err).__name__}: {err}"
        finally:
            watchdog.stop()
            if load is not None:
                result.load = load.join().summary()
            try:
                scenario.undo(self)
                self.settle()
            except Exception as err:
                result.error = (result.error or "") + f" (undo: {type(err).__name__}: {err})"
                self.rebuild()
        return result

    def _phase(self, watchdog: DryRun, phase: Phase) -> PhaseResult:
        before = len(watchdog.of("decision"))
        at = time.time()
        phase.inject(self)
        time.sleep(max(0.0, at + self.window_s - time.time()))
        decisions = watchdog.of("decision")[before:]
        first = decisions[0] if decisions else None
        return PhaseResult(phase.fault, phase.expected, summary(first) if first else None,
                           first["ts"] - at if first else None,
                           [summary(d) for d in decisions[1:]])

    def settle(self, timeout_s: float = 90) -> None:
        """Every node healthy by the checks HAProxy routes on (a DB node: Synced and Primary)."""
        self.lab.wait_healthy(timeout_s)

    def rebuild(self) -> None:
        self.lab.teardown()
        self.lab.up()


def matrix(t: Topology) -> list[Scenario]:
    """The rows: each node killed, each host killed, each service stopped with its machine alive,
    the web tier down, a DB node killed under writes, one node dead and then a host, the watchdog
    isolated, a host partitioned from the watchdog only."""
    db1, db2 = (n.name for n in t.nodes_of(Role.MYSQL))
    web1, web2 = [n.name for n in t.nodes_of(Role.WEB)][:2]
    lb1 = t.nodes_of(Role.LB)[0].name
    [spare] = t.spares

    def host(node: str) -> str:
        return t.nodes[node].host

    def nodes_of(h: str) -> str:
        return ", ".join(sorted(n.name for n in t.nodes_on(h)))

    def one(name: str, fault: str, inject: Fault, expected: str, undo: Fault,
            writes: bool = False) -> Scenario:
        return Scenario(name, (Phase(fault, inject, expected),), undo, writes)

    rows = [one(f"{n} killed", f"kill {n}", kill(n), f"replace {n}", revive(n))
            for n in (db1, db2, web1, web2, lb1)]
    rows += [one(f"host {h} killed", f"kill-host {h}", kill_host(h),
                 f"failover {h}: move {nodes_of(h)} to {spare}", revive_hosts(h))
             for h in (host(db1), host(db2), host(lb1))]
    rows.append(one(f"spare {spare} killed", f"kill-host {spare}", kill_host(spare),
                    f"none: idle_host_failed {spare}", revive_hosts(spare)))
    rows += [one(f"{what} stopped on {n}", f"stop-service {n}", stop(n), f"replace {n}", revive(n))
             for n, what in ((db1, "mariadbd"), (web1, "apache2"), (lb1, "haproxy"))]
    rows.append(one("web tier down", f"kill {web1} {web2}", kill(web1, web2),
                    f"replace {web1}, {web2}", revive(web1, web2)))
    rows.append(one(f"{db2} killed under writes", f"kill {db2} (writes through the LB)", kill(db2),
                    f"replace {db2}", revive(db2), writes=True))
    other = host(db2)  # the host of the other web node: every web node is then dead
    rows.append(Scenario(f"{web1} dead, then host {other}", (
        Phase(f"kill {web1}", kill(web1), f"replace {web1}"),
        Phase(f"kill-host {other}", kill_host(other),
              f"failover {other}: move {nodes_of(other)} to {spare}; replace {web1}"),
    ), both(revive_hosts(other), revive(web1))))
    rows.append(one("watchdog isolated", "cut the watchdog off the lab network", isolate_watchdog,
                    "refuse: isolation_suspected", end_isolation))
    h1 = host(db1)
    rows.append(one(f"host {h1} cut off from the watchdog only", f"partition {h1} --watchdog-only",
                    partition_from_watchdog(h1), "refuse: partitioned", heal(h1)))
    return rows


def run_matrix(lab: Lab, names: Sequence[str] | None = None, window_s: float = WINDOW_S,
               on_result: Callable[[ScenarioResult], None] | None = None) -> list[ScenarioResult]:
    """Every row of the matrix (or those named) on `lab`, which must be up."""
    bench = Bench(lab, window_s=window_s)
    results = []
    for scenario in matrix(lab.topology):
        if names and scenario.name not in names:
            continue
        result = bench.run(scenario)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
