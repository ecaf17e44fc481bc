"""What people read: plans, steps and the status table as lines of text, and the status as JSON.

No I/O: the CLI prints these lines, the watch loop logs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from components.topology import Topology
from watchdog.journal import Pending
from watchdog.plan import Plan, Step
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

    @property
    def healthy(self) -> bool:
        return all(r.ok for r in self.results)

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
                "pendingRemediation": None if pending is None else {
                    "id": pending.id, "code": pending.plan.code.value,
                    "reason": pending.plan.reason, "nextStep": pending.next_step}}

    def lines(self) -> list[str]:
        """The table for people: one aligned row per target, then spares and failed hosts."""
        header = ("KIND", "NAME", "ROLE", "HOST", "ADDRESS", "STATE", "LATENCY", "ERROR")
        table = [header] + [(r["kind"], r["name"], r["role"], r["host"], r["address"], r["state"],
                             f"{r['latency_ms']:.1f} ms",
                             r["error"] or (f"degraded: {r['degraded']}" if r["degraded"] else ""))
                            for r in self.rows()]
        widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in table]
        lines.append(f"spares: {', '.join(self.topology.spares) or '-'}; failed hosts: "
                     f"{', '.join(self.topology.failed_hosts) or '-'}")
        if self.pending is not None:
            lines.append(f"unfinished remediation {self.pending.id}: {self.pending.plan.reason} "
                         f"(next step: {self.pending.next_step})")
        return lines
