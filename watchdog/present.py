"""What people read: plans, steps and the status table (lines of text, or rich tables), and the
status as JSON.

No I/O: the CLI prints these, the watch loop logs them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from components.topology import Topology
from watchdog.journal import Pending
from watchdog.plan import Plan, Step
from watchdog.seen import Seen
from watchdog.target import Kind, ProbeResult, Target


def _program(command: str | None) -> str:
    """The fence command's program only: its arguments may carry credentials."""
    if command is None:
        return "no fence command (refused)"
    words = command.split()
    return words[0] + (" ..." if len(words) > 1 else "") if words else command


def describe(p: Plan) -> list[str]:
    """What running `p` would do, one line per step (for --dry-run)."""
    lines = []
    for step in p.steps:
        if step is Step.FENCE:
            lines += [f"fence {h}: {_program(p.topology.hosts[h].fence)}" for h in p.fence]
        elif step is Step.PRUNE_STATE:
            lines.append(f"prune the providers of {', '.join(p.prune)} and their dependents from "
                         "the Pulumi state")
        elif step is Step.WRITE_CONFIG:
            moves = ", ".join(f"{m.node} {m.from_host}->{m.to_host}" for m in p.moves)
            lines.append(f"write the stack file (spares {list(p.topology.spares)}, failedHosts "
                         f"{list(p.topology.failed_hosts)}{', moves ' + moves if moves else ''})")
        elif step is Step.UP:
            extra = f" --replace the domains of {', '.join(p.replace)}" if p.replace else ""
            lines.append(f"pulumi up{extra}")
        elif step is Step.VERIFY:
            lines.append(f"wait until {', '.join(p.verify)} answer healthy")
    return lines


def plan_lines(p: Plan) -> list[str]:
    """A plan for people: action, reason (with its code), moves, replacements, steps, notes."""
    lines = [f"action: {p.action.value}", f"reason: {p.reason} [{p.code}]"]
    lines += [f"move:   {m.node}: {m.from_host} -> {m.to_host}" for m in p.moves]
    lines += [f"replace: {n} (in place)" for n in p.replace]
    lines += [f"step:   {line}" for line in describe(p)]
    lines += [f"note:   {note.message} [{note.code}]" for note in p.notes]
    return lines


@dataclass(frozen=True)
class Status:
    """One probe round over every target, with what the stack file and the journal say."""

    stack: str
    topology: Topology
    targets: Sequence[Target]
    results: Sequence[ProbeResult]
    pending: Pending | None
    answering: tuple[str, ...] = ()  # hosts in mac:failedHosts that answer again (split brain?)
    seen: Mapping[str, Seen] = field(default_factory=dict)  # what a running watchdog saw
    journal: Sequence[Mapping[str, Any]] = ()  # the pending remediation's journal entries
    now: float = 0.0

    @property
    def healthy(self) -> bool:
        return all(r.ok for r in self.results) and not self.answering

    def rows(self) -> list[dict[str, Any]]:
        by_key = {t.key: t for t in self.targets}
        rows = []
        for r in self.results:
            t = by_key[r.key]
            rows.append({"kind": t.kind.value, "name": t.name, "role": t.role,
                         "host": self.topology.nodes[t.name].host if t.kind is Kind.NODE else t.name,
                         "address": t.address, "state": "up" if r.ok else "down",
                         "latency_ms": round(r.latency_s * 1000, 1), "error": r.error,
                         "degraded": r.degraded})
        return rows

    def to_json(self) -> dict[str, Any]:
        pending = self.pending
        return {"stack": self.stack, "healthy": self.healthy, "targets": self.rows(),
                "spares": list(self.topology.spares),
                "failedHosts": list(self.topology.failed_hosts),
                "failedHostsAnswering": list(self.answering),
                "pendingRemediation": None if pending is None else {
                    "id": pending.id, "code": pending.plan.code.value,
                    "reason": pending.plan.reason, "nextStep": pending.next_step}}

    # --- the rich view (`mac-watchdog status`, `--watch`) ----------------------------------------

    def table(self) -> RenderableType:
        """Hosts, then nodes (role, where each runs, health, since when), then what is pending."""
        rows = {(r["kind"], r["name"]): r for r in self.rows()}
        now = self.now or time.time()
        t = self.topology
        hosts = Table(title=f"stack {self.stack}: hosts", title_justify="left", expand=False)
        for column in ("HOST", "ROLE", "RUNS", "HEALTH", "SINCE", "ADDRESS"):
            hosts.add_column(column)
        for name in sorted(t.hosts):
            role = ("failed" if name in t.failed_hosts else "spare" if name in t.spares else "active")
            runs = ", ".join(sorted(n for n, node in t.nodes.items() if node.host == name)) or "-"
            row = rows.get(("host", name))
            hosts.add_row(name, role, runs, *self._health(row, f"host:{name}", now),
                          t.hosts[name].address)
        nodes = Table(title=f"stack {self.stack}: nodes", title_justify="left", expand=False)
        for column in ("NODE", "ROLE", "HOST", "HEALTH", "SINCE", "ADDRESS"):
            nodes.add_column(column)
        for name in sorted(t.nodes):
            node = t.nodes[name]
            row = rows.get(("node", name))
            nodes.add_row(name, node.role.value, node.host, *self._health(row, f"node:{name}", now),
                          node.ip)
        return Group(hosts, nodes, *[Text(line) for line in self.pending_lines(now)])

    def _health(self, row: Mapping[str, Any] | None, key: str, now: float) -> tuple[Text, str]:
        seen = self.seen.get(key)
        since = f"{seen.state} for {_ago(now - seen.since)}" if seen else "-"
        if row is None:  # a failed host: not probed
            return Text("not probed", style="dim"), since
        if row["state"] == "up" and row.get("degraded"):
            return Text(f"up {row['latency_ms']:.0f} ms, degraded: {row['degraded']}",
                        style="yellow"), since
        if row["state"] == "up":
            return Text(f"up {row['latency_ms']:.0f} ms", style="green"), since
        return Text(f"down ({row['error'] or 'no answer'})", style="bold red"), since

    def pending_lines(self, now: float) -> list[str]:
        """The unfinished remediation and its steps from the journal (a failover as it happens)."""
        p = self.pending
        lines = [f"spares: {', '.join(self.topology.spares) or '-'}; failed hosts: "
                 f"{', '.join(self.topology.failed_hosts) or '-'}"]
        lines += [f"WARNING: {host} is in mac:failedHosts but answers again: the nodes that moved "
                  "away may be answered by its old VMs (split brain); power it off, then "
                  f"`mac-watchdog reclaim {host}`" for host in self.answering]
        if p is None:
            return [*lines, "pending remediation: none"]
        lines.append(f"pending remediation {p.id}: {p.plan.reason} [{p.plan.code}], started "
                     f"{_ago(now - p.started_at)} ago")
        started: dict[str, float] = {}
        for entry in self.journal:
            if entry.get("event") != "step":
                continue
            step, status, ts = str(entry.get("step")), entry.get("status"), float(entry.get("ts", now))
            if status == "started":
                started[step] = ts
            elif status in ("done", "failed"):
                took = ts - started.pop(step, ts)
                lines.append(f"  {step}: {status} in {took:.1f} s"
                             + (f" ({entry['error']})" if entry.get("error") else ""))
        for step, ts in started.items():
            lines.append(f"  {step}: running for {_ago(now - ts)}")
        if p.next_step is not None and p.next_step.value not in started:
            lines.append(f"  next: {p.next_step.value}")
        return lines


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d"
