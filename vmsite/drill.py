"""The drills on the running vm stack: a host (or one VM, or the watchdog's own link) fails under
load and the real `mac-watchdog run` (not a dry run) alone brings the site back.

`make drill`, tests/vm/test_drill.py and bench/drill.py call these functions. Everything that
talks to VM or host addresses runs inside the stack's namespaces: the watchdog in its own seat
(`Site.watchdog_seat`, so it can be cut off), the load generator (`vmsite.loadgen`) and the
probes (curl, ssh) in the switch namespace. The timeline is taken from the watchdog's JSON log
(health changes, its decision), its journal (each step started/done) and polling (domains on
the target host, health endpoints, clustercheck, HAProxy's stats); seconds count from the kill.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.topology import Role, Topology, TopologyError
from lab.load import LoadReport
from vmsite import hypervisor, net
from vmsite.loadgen import read_report
from vmsite.project import ENGINE
from vmsite.site import Site, SiteError
from vmsite.state import REPO, STACK

RATE = 4.0  # requests/s through the LB: each one a write (INSERT) and a read (the count)
WARM_S = 5.0  # load before the kill
POLL_S = 1.0
RECOVERY_TIMEOUT_S = 420.0


class DrillError(SiteError):
    """A drill could not run (or the site did not come back); the message says what."""


# ---- the watchdog, for real -------------------------------------------------------------------

@dataclass
class WatchdogRun:
    """`mac-watchdog run --json-log` in the watchdog's namespace; its log lines as they come."""

    site: Site
    lines: list[dict[str, Any]] = field(default_factory=list)
    proc: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def start(self) -> WatchdogRun:
        exe = str(REPO / ".venv" / "bin" / "mac-watchdog")
        argv = [exe, "run", "--json-log", "--stack", STACK, "--project-dir", str(self.site.project),
                "--state-dir", str(self.site.run.watchdog_state), "--pulumi-root", str(ENGINE),
                "--metrics-port", "0"]
        self.site.run.logs.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(net.argv(self.site.watchdog_netns, argv), cwd=self.site.project,
                                     env=self.site.watchdog_env(), text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        with open(self.site.run.logs / "watchdog.jsonl", "a", encoding="utf-8") as log:
            for line in self.proc.stderr:
                log.write(line)
                log.flush()
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        self.lines.append(entry)

    def wait_watching(self, topology: Topology, timeout_s: float = 90) -> None:
        """Until every active host and every node has been seen healthy."""
        want = {f"host:{h}" for h in topology.hosts if h not in topology.failed_hosts} | \
            {f"node:{n}" for n in topology.nodes}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = {e.get("target") for e in list(self.lines)
                    if e.get("event") == "health" and e.get("state") == "healthy"}
            if want <= seen:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise DrillError(f"mac-watchdog run exited {self.proc.returncode}: "
                                 + "; ".join(e.get("message", "") for e in self.lines[-5:]))
            time.sleep(0.5)
        raise DrillError(f"the watchdog did not see {sorted(want - seen)} healthy within {timeout_s:g} s")

    def first(self, match: Callable[[dict[str, Any]], bool], since: float) -> dict[str, Any] | None:
        return next((e for e in list(self.lines) if e.get("ts", 0) >= since and match(e)), None)

    def since(self, since: float) -> list[dict[str, Any]]:
        return [e for e in list(self.lines) if e.get("ts", 0) >= since]

    def stop(self, timeout_s: float = 120) -> int | None:
        """Ctrl-C (a step that runs finishes first), SIGKILL after `timeout_s`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.proc.returncode


# ---- load -----------------------------------------------------------------------------------

@dataclass
class LoadRun:
    """`vmsite.loadgen` through the LB, inside the switch namespace."""

    site: Site
    rate: float = RATE
    proc: subprocess.Popen[str] | None = None

    @property
    def out(self) -> Path:
        return self.site.run.logs / "load.json"

    def start(self) -> LoadRun:
        self.out.unlink(missing_ok=True)
        url = f"http://{self.site.topology().front_ip}"
        argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "vmsite.loadgen", url, str(self.rate),
                str(self.out)]
        self.proc = subprocess.Popen(net.argv(self.site.netns, argv), cwd=REPO, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "started"
        return self

    def stop(self) -> LoadReport:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(timeout=60)
        return read_report(self.out)


# ---- polling ----------------------------------------------------------------------------------

def _ok(site: Site, url: str) -> bool:
    code, _ = site.http(url, timeout=3)
    return code == 200


def backends_up(site: Site, topology: Topology) -> set[str]:
    """The web nodes HAProxy reports UP."""
    code, csv = site.http(f"http://{topology.arbitrator.ip}:8404/stats;csv", timeout=3)
    if code != 200:
        return set()
    return {line.split(",")[1] for line in csv.splitlines()
            if line.count(",") > 17 and line.split(",")[17].startswith("UP")}


def domains(site: Site, host: str, running: bool) -> set[str]:
    """The domains defined (or running) on `host`, through its libvirtd's socket."""
    h = hypervisor.Host(host, site.run.host_dir(host))
    if not h.socket.exists():
        return set()
    args = ["list", "--name"] + ([] if running else ["--all"])
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        return set(h.virsh(*args, check=False).stdout.split())
    return set()


def tokens_on(site: Site, topology: Topology, db: str, run_id: str) -> set[str]:
    ip = topology.nodes[db].ip
    rc, out = site.ssh(ip, f"mariadb -N -B -e \"SELECT token FROM mac.visits WHERE token LIKE "
                           f"'{run_id}-%'\"", timeout=120)
    if rc != 0:
        raise DrillError(f"cannot read the writes on {db}: {out[-300:]}")
    return set(out.split())


def galera_size(site: Site, topology: Topology, db: str) -> int:
    rc, out = site.ssh(topology.nodes[db].ip,
                       "mariadb -N -B -e \"SHOW STATUS LIKE 'wsrep_cluster_size'\"", timeout=120)
    words = out.split()
    return int(words[-1]) if rc == 0 and words and words[-1].isdigit() else 0


# ---- results --------------------------------------------------------------------------------

@dataclass
class DrillResult:
    scenario: str
    victim: str
    killed_at: float  # epoch seconds
    timeline: list[tuple[float, str]] = field(default_factory=list)  # (s from the kill, what)
    marks: dict[str, float] = field(default_factory=dict)  # first time of each milestone
    report: LoadReport | None = None
    killed_mono: float = 0.0
    writes_missing: dict[str, set[str]] = field(default_factory=dict)
    galera_size: int = 0
    stack_diff: str = ""
    journal: list[dict[str, Any]] = field(default_factory=list)
    watchdog_log: list[dict[str, Any]] = field(default_factory=list)
    moved: dict[str, str] = field(default_factory=dict)  # node -> host after

    def mark(self, what: str, at: float | None = None) -> None:
        """Record `what` at epoch `at` (now), once."""
        if what not in self.marks:
            seconds = round((at if at is not None else time.time()) - self.killed_at, 1)
            self.marks[what] = seconds
            self.timeline.append((seconds, what))

    def site_down_s(self) -> float:
        """The outage the kill caused: the longest time without a successful response that
        ends after the kill (0 when no request failed)."""
        if self.report is None or not self.report.failed:
            return 0.0
        done = sorted(o.done for o in self.report.outcomes if o.ok)
        gaps = [b - a for a, b in itertools.pairwise(done) if b > self.killed_mono]
        return round(max(gaps, default=0.0), 1)

    def last_failure_s(self) -> float | None:
        """When the last failed request ended, from the kill (requests sent during the outage
        end up to the load's 10 s timeout later, some sent late by its busy workers)."""
        if self.report is None or not self.report.failed:
            return None
        return round(max(o.done for o in self.report.failed) - self.killed_mono, 1)

    def figures(self) -> dict[str, Any]:
        report = self.report or LoadReport()
        acknowledged = report.acknowledged_tokens
        lost = set().union(*self.writes_missing.values()) if self.writes_missing else set()
        out: dict[str, Any] = {
            "scenario": self.scenario, "victim": self.victim,
            "detect_s": self.marks.get("declared failed"),
            "suspected_s": self.marks.get("suspected"),
            "fenced_s": self.marks.get("fenced"),
            "up_started_s": self.marks.get("up started"),
            "up_done_s": self.marks.get("up done"),
            "healthy_s": self.marks.get("healthy"),
            "requests": report.requests, "failed_requests": len(report.failed),
            "longest_stall_s": round(report.longest_stall_s(), 1) if report.requests else None,
            "writes_acknowledged": len(acknowledged), "writes_lost": len(lost),
            "galera_size": self.galera_size, "moved": self.moved,
            "failed_samples": [o.error or o.status for o in report.failed][:3]}
        if self.scenario == "lb-host":
            out["site_down_s"] = self.site_down_s()
        out["last_failure_s"] = self.last_failure_s()
        return out

    def render(self) -> str:
        lines = [f"drill {self.scenario}: {self.victim} killed"]
        lines += [f"  {s:7.1f} s  {what}" for s, what in sorted(self.timeline)]
        lines.append(json.dumps(self.figures()))
        if self.stack_diff:
            lines += ["stack file diff:", self.stack_diff]
        if self.journal:
            lines.append("journal:")
            lines += [f"  {json.dumps(_short(e))}" for e in self.journal]
        return "\n".join(lines)


def _short(entry: dict[str, Any]) -> dict[str, Any]:
    """A journal entry as the timeline shows it: the plan and the pruned URNs counted, not listed."""
    out = {k: v for k, v in entry.items() if k not in ("plan", "removed")}
    if "removed" in entry:
        out["removed"] = f"{len(entry['removed'])} resources"
    return out


def journal_since(site: Site, since: float) -> list[dict[str, Any]]:
    path = site.run.watchdog_state / "journal.jsonl"
    out = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("ts", 0) >= since:
                    out.append(entry)
    return out


def _marks_from_watchdog(result: DrillResult, watchdog: WatchdogRun, target: str) -> None:
    for entry in watchdog.since(result.killed_at):
        if entry.get("event") == "health" and entry.get("target") == target:
            if entry.get("state") == "suspect":
                result.mark("suspected", entry["ts"])
            elif entry.get("state") == "failed":
                result.mark("declared failed", entry["ts"])
        elif entry.get("event") == "decision":
            result.mark(f"plan: {entry.get('action')} ({entry.get('code')})", entry["ts"])
            result.mark("plan", entry["ts"])
        elif entry.get("logger") == "watchdog.alert":
            result.mark(f"alert: {entry.get('message', '')[:90]}", entry["ts"])


STEP_MARKS = {("fence", "done"): "fenced", ("prune_state", "done"): "state pruned",
              ("write_config", "done"): "stack file written", ("up", "started"): "up started",
              ("up", "done"): "up done", ("verify", "done"): "verified"}


def _marks_from_journal(result: DrillResult, site: Site) -> list[dict[str, Any]]:
    entries = journal_since(site, result.killed_at)
    for entry in entries:
        if entry.get("event") == "planned":
            result.mark("remediation journaled", entry["ts"])
        elif entry.get("event") == "step":
            what = STEP_MARKS.get((entry.get("step", ""), entry.get("status", "")))
            if what:
                result.mark(what, entry["ts"])
            elif entry.get("status") == "failed":
                result.mark(f"step {entry.get('step')} failed: {str(entry.get('error'))[:80]}",
                            entry["ts"])
        elif entry.get("event") == "finished":
            result.mark(f"remediation finished: {entry.get('outcome')}", entry["ts"])
    return entries


def _poll_site(result: DrillResult, site: Site, before: Topology, victims: list[str]) -> bool:
    """One round of polling; True once the site is whole again."""
    try:
        now = site.topology()
    except (TopologyError, OSError):  # the watchdog writes it atomically; be safe anyway
        return False
    whole = True
    for name in victims:
        node = now.nodes[name]
        moved = node.host != before.nodes[name].host
        if (moved or result.scenario == "vm") and "up started" in result.marks:
            if name in domains(site, node.host, running=False):
                result.mark(f"{name} defined on {node.host}")
            if name in domains(site, node.host, running=True):
                result.mark(f"{name} booted on {node.host}")
        if _ok(site, now.health_url(node)):
            result.mark(f"{name} healthy")
        else:
            whole = False
    dbs = now.nodes_of(Role.MYSQL)
    if all(_ok(site, now.health_url(n)) for n in dbs):
        result.mark(f"Galera: {len(dbs)} data nodes Synced")
    else:
        whole = False
    webs = {n.name for n in now.nodes_of(Role.WEB)}
    if webs <= backends_up(site, now):
        result.mark("LB: all backends UP")
    else:
        whole = False
    if whole:
        result.mark("healthy")
    return whole


def _wait_recovered(result: DrillResult, site: Site, watchdog: WatchdogRun, before: Topology,
                    victims: list[str], target: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _marks_from_watchdog(result, watchdog, target)
        entries = _marks_from_journal(result, site)
        finished = any(e.get("event") == "finished" for e in entries)
        if _poll_site(result, site, before, victims) and finished:
            return
        refused = watchdog.first(lambda e: e.get("event") == "decision"
                                 and e.get("action") == "refuse", result.killed_at)
        if refused is not None:
            raise DrillError(f"{result.scenario}: the watchdog refused: {refused.get('reason')}")
        if watchdog.proc is not None and watchdog.proc.poll() is not None:
            raise DrillError(f"mac-watchdog run exited {watchdog.proc.returncode} during the drill")
        time.sleep(POLL_S)
    raise DrillError(f"{result.scenario}: the site was not whole {timeout_s:g} s after the kill: "
                     + ", ".join(f"{w} at {s} s" for s, w in sorted(result.timeline)))


def wait_cooldown(site: Site) -> None:
    """Until the watchdog's cooldown since the last remediation has passed (mac:watchdog.cooldown)."""
    entries = journal_since(site, 0)
    planned = [e["ts"] for e in entries if e.get("event") == "planned"]
    if planned:
        wait = planned[-1] + site.topology().watchdog.cooldown_s + 1 - time.time()
        if wait > 0:
            time.sleep(wait)


def _finish(result: DrillResult, site: Site, load: LoadRun | None, watchdog: WatchdogRun,
            before_text: str, before: Topology, victims: list[str]) -> DrillResult:
    if load is not None and load.proc is not None:
        result.report = load.stop()
    watchdog.stop()
    _marks_from_watchdog(result, watchdog, f"host:{result.victim}")
    result.journal = _marks_from_journal(result, site)
    result.watchdog_log = watchdog.since(result.killed_at)
    after_text = site.run.stack_file.read_text()
    result.stack_diff = "".join(difflib.unified_diff(
        before_text.splitlines(keepends=True), after_text.splitlines(keepends=True),
        "Pulumi.vm.yaml (before)", "Pulumi.vm.yaml (after)", n=0))
    after = site.topology()
    result.moved = {n: after.nodes[n].host for n in victims if n in after.nodes}
    return result


def check_writes(result: DrillResult, site: Site) -> None:
    """Every acknowledged write on every DB node, and Galera's size (data nodes + garbd)."""
    assert result.report is not None
    acknowledged = result.report.acknowledged_tokens
    if not acknowledged:
        return
    run_id = next(iter(acknowledged)).rsplit("-", 1)[0]
    topology = site.topology()
    for db in topology.nodes_of(Role.MYSQL):
        result.writes_missing[db.name] = acknowledged - tokens_on(site, topology, db.name, run_id)
    result.galera_size = galera_size(site, topology, topology.nodes_of(Role.MYSQL)[0].name)


# ---- the scenarios --------------------------------------------------------------------------

def victim_host(topology: Topology) -> str:
    """An active host carrying a DB node and a web node."""
    for host in (h for h in topology.hosts if h not in topology.failed_hosts):
        roles = {n.role for n in topology.nodes.values() if n.host == host}
        if {Role.MYSQL, Role.WEB} <= roles:
            return host
    raise DrillError("no host carries both a DB node and a web node")


def host_drill(site: Site, host: str, scenario: str = "host", rate: float = RATE,
               timeout_s: float = RECOVERY_TIMEOUT_S, say: Callable[[str], None] = print) -> DrillResult:
    """Steady load, the real watchdog, then `host` loses power; until the site is whole again."""
    before = site.topology()
    before_text = site.run.stack_file.read_text()
    victims = [n.name for n in before.nodes.values() if n.host == host]
    wait_cooldown(site)
    watchdog = WatchdogRun(site).start()
    load: LoadRun | None = None
    result = DrillResult(scenario, host, time.time())
    try:
        watchdog.wait_watching(before)
        load = LoadRun(site, rate).start()
        time.sleep(WARM_S)
        say(f"power cut: {host} ({', '.join(victims)})")
        result.killed_mono, result.killed_at = time.monotonic(), time.time()
        site.power(host, on=False)
        result.mark("killed")
        _wait_recovered(result, site, watchdog, before, victims, f"host:{host}", timeout_s)
        time.sleep(2.0)  # the load sees the whole site for a moment
    finally:
        _finish(result, site, load, watchdog, before_text, before, victims)
    check_writes(result, site)
    return result


def vm_drill(site: Site, node: str, rate: float = RATE, timeout_s: float = RECOVERY_TIMEOUT_S,
             say: Callable[[str], None] = print) -> DrillResult:
    """One VM's qemu killed (its host fine): replaced in place by the watchdog."""
    before = site.topology()
    before_text = site.run.stack_file.read_text()
    host = before.nodes[node].host
    wait_cooldown(site)
    watchdog = WatchdogRun(site).start()
    load: LoadRun | None = None
    result = DrillResult("vm", node, time.time())
    try:
        watchdog.wait_watching(before)
        load = LoadRun(site, rate).start()
        time.sleep(WARM_S)
        pid = int((site.run.host_dir(host) / "run" / "qemu" / f"{node}.pid").read_text())
        say(f"qemu of {node} killed on {host} (pid {pid})")
        result.killed_mono, result.killed_at = time.monotonic(), time.time()
        subprocess.run(["kill", "-9", str(pid)], check=True)
        result.mark("killed")
        _wait_recovered(result, site, watchdog, before, [node], f"node:{node}", timeout_s)
        _marks_from_watchdog(result, watchdog, f"node:{node}")
    finally:
        _finish(result, site, load, watchdog, before_text, before, [node])
    check_writes(result, site)
    return result


def quiet_drill(site: Site, scenario: str, fault: Callable[[], None], heal: Callable[[], None],
                watch_s: float, say: Callable[[str], None] = print, target: str = "") -> DrillResult:
    """A fault after which the watchdog must do nothing (fence nothing, write nothing, deploy
    nothing): it runs for `watch_s` and is stopped, then the fault is healed."""
    before = site.topology()
    before_text = site.run.stack_file.read_text()
    wait_cooldown(site)
    watchdog = WatchdogRun(site).start()
    result = DrillResult(scenario, "", time.time())
    try:
        watchdog.wait_watching(before)
        result.killed_mono, result.killed_at = time.monotonic(), time.time()
        fault()
        result.mark("fault")
        time.sleep(watch_s)
        _marks_from_watchdog(result, watchdog, target)
    finally:
        # The watchdog stops before the heal: what is judged is what it did during the fault.
        # A host powered on with its VMs still booting is a new situation (nodes failed on a live
        # host: it would rightly plan to replace them).
        watchdog.stop()
        heal()
        _finish(result, site, None, watchdog, before_text, before, [])
    return result


def isolation_drill(site: Site, watch_s: float = 30.0, say: Callable[[str], None] = print) -> DrillResult:
    """The watchdog's link to the VM network cut for `watch_s`: it must suspect itself, not act."""
    say("the watchdog's link cut")
    result = quiet_drill(site, "isolated", lambda: site.cut_watchdog(True),
                         lambda: site.cut_watchdog(False), watch_s, say)
    result.victim = "watchdog link"
    return result


def no_spare_drill(site: Site, host: str, watch_s: float = 30.0,
                   say: Callable[[str], None] = print) -> DrillResult:
    """`host` dies while no spare is left: refusal and alert, nothing fenced/written/deployed.
    The host is powered on again afterwards and its VMs started (virsh start, as an operator
    would: the program sets autostart=False)."""
    if site.topology().spares:
        raise DrillError(f"no-spare drill needs no spare left; mac:spares is {list(site.topology().spares)}")
    say(f"power cut: {host}, no spare left")
    def heal() -> None:
        site.power(host, on=True)
        h = hypervisor.Host(host, site.run.host_dir(host))
        for name in sorted(domains(site, host, running=False)):
            h.virsh("start", name, check=False)

    result = quiet_drill(site, "no-spare", lambda: site.power(host, on=False), heal, watch_s, say,
                         target=f"host:{host}")
    result.victim = host
    return result


def reclaim(site: Site, host: str) -> subprocess.CompletedProcess[str]:
    """The operator's flow for a repaired host: power it on, `mac-watchdog reclaim HOST`."""
    site.power(host, on=True)
    return site.watchdog("reclaim", host, "--pulumi-root", str(ENGINE), timeout=300)


def fenced_by_bmc(site: Site, host: str) -> bool:
    """The host's BMC logged a power off (its chassis log)."""
    log = site.run.root / "bmc" / host / "chassis.log"
    return log.exists() and "power off: exit 0" in log.read_text()
