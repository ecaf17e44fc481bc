"""Planning: topology + what failed -> what to do, as a new topology or a refusal with a reason.

Pure: no I/O, no clock (the caller passes `now` and the remediation history). Every topology it
proposes passes `components.topology.validate`, so the watchdog can never write a cluster that
breaks the model's rules (anti-affinity, spares never active, ...).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from components.topology import FENCE_NONE, Role, Topology, parse_topology, to_config, validate
from watchdog.detect import Failures
from watchdog.errors import JournalError
from watchdog.reasons import Note, Reason

HOUR_S = 3600.0
# Replacements of one node within this window count towards escalating it to a move.
ATTEMPT_WINDOW_S = HOUR_S


class Action(StrEnum):
    FAILOVER = "failover"
    REPLACE = "replace"
    NONE = "none"
    REFUSE = "refuse"
    RECLAIM = "reclaim"  # an operator's: a repaired host back to the spares


class Step(StrEnum):
    """Pipeline steps, in the order they run."""

    FENCE = "fence"
    PRUNE_STATE = "prune_state"
    WRITE_CONFIG = "write_config"
    UP = "up"
    VERIFY = "verify"


@dataclass(frozen=True)
class Move:
    node: str
    from_host: str
    to_host: str

    def to_json(self) -> dict[str, str]:
        return {"node": self.node, "from": self.from_host, "to": self.to_host}


@dataclass(frozen=True)
class Remediation:
    """One remediation the watchdog started (from the journal): when, what, about which targets."""

    at: float
    action: Action
    hosts: tuple[str, ...] = ()  # failed hosts it handled
    nodes: tuple[str, ...] = ()  # nodes it replaced or moved
    moved: tuple[str, ...] = ()  # nodes it moved to another host


@dataclass(frozen=True)
class History:
    remediations: tuple[Remediation, ...] = ()

    def last_at(self) -> float | None:
        deploys = [r.at for r in self.remediations if r.action in (Action.FAILOVER, Action.REPLACE)]
        return max(deploys, default=None)

    def count_since(self, since: float) -> int:
        return sum(1 for r in self.remediations
                   if r.at > since and r.action in (Action.FAILOVER, Action.REPLACE))

    def replacements(self, node: str, since: float) -> int:
        """In-place replacements of `node` after `since` and after its last move."""
        last_move = max((r.at for r in self.remediations if node in r.moved), default=float("-inf"))
        return sum(1 for r in self.remediations
                   if r.action is Action.REPLACE and node in r.nodes and r.at > max(since, last_move))


@dataclass(frozen=True)
class Plan:
    action: Action
    code: Reason  # why, for machines
    reason: str  # why, for people
    topology: Topology  # the cluster after the plan (the current one when nothing changes)
    moves: tuple[Move, ...] = ()
    fence: tuple[str, ...] = ()  # hosts to power off first
    prune: tuple[str, ...] = ()  # hosts whose provider and dependents leave the Pulumi state
    replace: tuple[str, ...] = ()  # nodes whose domain is replaced in place
    verify: tuple[str, ...] = ()  # nodes that must turn healthy afterwards
    steps: tuple[Step, ...] = ()
    notes: tuple[Note, ...] = field(default=())
    # sha256 of the stack file the plan was made from ("": unknown); the write is a compare-and-swap
    source_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        t = self.topology
        return {
            "action": self.action.value,
            "code": self.code.value,
            "reason": self.reason,
            "moves": [m.to_json() for m in self.moves],
            "replace": list(self.replace),
            "fence": list(self.fence),
            "steps": [s.value for s in self.steps],
            "notes": [n.to_json() for n in self.notes],
            "topology": topology_json(t),
        }

    def to_record(self) -> dict[str, Any]:
        """Everything needed to carry on with the plan after a restart (the whole stack's
        topology included): what the journal keeps."""
        return {**self.to_json(), "prune": list(self.prune), "verify": list(self.verify),
                "config": to_config(self.topology), "source_hash": self.source_hash}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Plan:
        try:
            return cls(
                action=Action(record["action"]), code=Reason(record.get("code", Reason.UNKNOWN)),
                reason=record["reason"], topology=parse_topology(record["config"]),
                moves=tuple(Move(m["node"], m["from"], m["to"]) for m in record["moves"]),
                fence=tuple(record["fence"]), prune=tuple(record["prune"]),
                replace=tuple(record["replace"]), verify=tuple(record["verify"]),
                steps=tuple(Step(s) for s in record["steps"]),
                notes=tuple(Note.from_json(n) for n in record.get("notes", ())),
                source_hash=str(record.get("source_hash", "")))
        except (KeyError, TypeError, ValueError) as err:
            raise JournalError(f"the journal holds a plan this watchdog cannot read ({err!r}); "
                               "move the journal aside after checking the cluster by hand") from None


def topology_json(t: Topology) -> dict[str, Any]:
    """The parts of a topology a plan changes, as in the stack file."""
    return {
        "hosts": sorted(t.hosts),
        "spares": list(t.spares),
        "failedHosts": list(t.failed_hosts),
        "nodes": {name: {"role": n.role.value, "host": n.host, "ip": n.ip}
                  for name, n in sorted(t.nodes.items())},
    }


def plan(topology: Topology, failures: Failures, history: History | None = None, now: float = 0.0,
         *, manual: bool = False, healthy: Collection[str] | None = None) -> Plan:
    """What the watchdog does about `failures`. `manual` (an operator's failover) skips the
    cooldown and hourly budget, never the placement and fencing rules. `healthy`: the nodes known
    to answer right now (None: every node that did not fail), for the DB data rule."""
    history = history or History()
    notes = failures.notes

    def refuse(code: Reason, reason: str) -> Plan:
        return Plan(Action.REFUSE, code, reason, topology, notes=notes)

    if failures.isolated:
        return refuse(Reason.ISOLATION_SUSPECTED,
                      notes[0].message if notes else "isolation suspected; acting on nothing")
    unknown = [h for h in failures.hosts if h not in topology.hosts]
    unknown += [n for n in failures.nodes if n not in topology.nodes]
    if unknown:
        return refuse(Reason.UNKNOWN_TARGET, f"unknown host or node: {', '.join(unknown)}")
    already = [h for h in failures.hosts if h in topology.failed_hosts]
    if already:
        return refuse(Reason.ALREADY_FAILED,
                      f"{', '.join(already)} already in mac:failedHosts; nothing runs there")
    dead_idle = [h for h in failures.hosts if not topology.nodes_on(h)]
    dead_busy = [h for h in failures.hosts if topology.nodes_on(h)]
    if not dead_busy and not failures.nodes:
        if failures.partitioned and not dead_idle:
            return refuse(Reason.PARTITIONED, next(
                (n.message for n in notes if n.code is Reason.PARTITIONED),
                f"{', '.join(failures.partitioned)} cut off from the watchdog only; acting on nothing"))
        if not dead_idle:
            return Plan(Action.NONE, Reason.NOTHING_FAILED, "nothing failed", topology, notes=notes)
        return _drop_idle(topology, dead_idle, notes)

    if not manual:
        guard = _guard(topology, history, now)
        if guard:
            return refuse(*guard)
    if dead_busy:
        p = _failover_hosts(topology, dead_busy, dead_idle, notes, failures.nodes)
    else:
        p = _heal_nodes(topology, failures.nodes, dead_idle, history, now, notes)
    return _keep_db_data(p, topology, failures, healthy)


def _keep_db_data(p: Plan, topology: Topology, failures: Failures,
                  healthy: Collection[str] | None) -> Plan:
    """Refuse a plan that rebuilds a DB node on a fresh disk (a move) unless another DB node that
    holds the data stays where it is and is healthy: the fresh node would otherwise found an
    empty cluster, or sit beside garbd, and the data's return would then be wiped by SST."""
    moved = {m.node for m in p.moves}
    for move in p.moves:
        if topology.nodes[move.node].role is not Role.MYSQL:
            continue
        peers = [n for n in topology.nodes_of(Role.MYSQL) if n.name != move.node]
        holders = [n.name for n in peers if n.name not in moved and n.name not in failures.nodes
                   and n.host not in failures.hosts and (healthy is None or n.name in healthy)]
        if not holders:
            others = ", ".join(n.name for n in peers) or "none"
            return Plan(Action.REFUSE, Reason.DB_DATA_NEEDS_PERSON,
                        f"DB data needs a person: {move.node} would be rebuilt on a fresh disk on "
                        f"{move.to_host} while no other DB node holding the data is healthy "
                        f"({others}); bring one back (or restore the data), then remediate by hand",
                        topology, notes=p.notes)
    return p


def _guard(topology: Topology, history: History, now: float) -> tuple[Reason, str] | None:
    s = topology.watchdog
    last = history.last_at()
    if last is not None and now - last < s.cooldown_s:
        wait = s.cooldown_s - (now - last)
        return (Reason.COOLDOWN, f"in cooldown: the last remediation started {now - last:.0f} s ago "
                f"(mac:watchdog.cooldown {s.cooldown_s:g} s); next possible in {wait:.0f} s")
    done = history.count_since(now - HOUR_S)
    if done >= s.remediations_per_hour:
        return (Reason.OVER_BUDGET, f"over budget: {done} remediations in the last hour "
                f"(mac:watchdog.remediationsPerHour {s.remediations_per_hour})")
    return None


def _retire(topology: Topology, hosts: Iterable[str]) -> Topology:
    """Record hosts as failed: they leave the spares and the program stops managing them."""
    hosts = [h for h in hosts if h not in topology.failed_hosts]
    return topology.with_(spares=tuple(s for s in topology.spares if s not in hosts),
                          failed_hosts=(*topology.failed_hosts, *hosts))


def _checked(plan_: Plan, original: Topology) -> Plan:
    """The plan, or a refusal (keeping `original`) when its topology breaks a rule of the model."""
    problems = validate(plan_.topology)
    if problems:
        return Plan(Action.REFUSE, Reason.RULE_BROKEN, f"the new topology would break a rule: {problems[0]}",
                    original, notes=plan_.notes)
    return plan_


def _drop_idle(topology: Topology, hosts: list[str], notes: tuple[Note, ...]) -> Plan:
    new = _retire(topology, hosts)
    what = ", ".join(hosts)
    return _checked(Plan(
        Action.NONE, Reason.IDLE_HOST_FAILED, f"{what} failed while running no node: dropped from "
        "mac:spares and recorded in mac:failedHosts (no deploy needed)", new, prune=tuple(hosts),
        steps=(Step.PRUNE_STATE, Step.WRITE_CONFIG), notes=notes), topology)


def _fits(topology: Topology, names: Iterable[str], host: str) -> bool:
    """Anti-affinity: `host` runs no other node of the roles of `names`."""
    moving = set(names)
    roles = [topology.nodes[n].role for n in moving]
    if len(roles) != len(set(roles)):
        return False
    taken = {n.role for n in topology.nodes_on(host) if n.name not in moving}
    return not taken.intersection(roles)


def _spares_free(topology: Topology, exclude: Iterable[str]) -> list[str]:
    skip = set(exclude) | set(topology.failed_hosts)
    return [s for s in topology.spares if s not in skip]


def _failover_hosts(topology: Topology, busy: list[str], idle: list[str],
                    notes: tuple[Note, ...], failed_nodes: tuple[str, ...] = ()) -> Plan:
    """Fence each busy host and move its nodes to a spare; nodes that failed on reachable hosts
    meanwhile are replaced in place by the same plan (one decision covers the whole fault)."""
    for host in busy:
        fence = topology.hosts[host].fence
        if fence is None:
            return Plan(Action.REFUSE, Reason.NO_FENCE_COMMAND,
                        f"host {host} has no fence command: set mac:hosts.{host}.fence to a "
                        f"power-off command, or to '{FENCE_NONE}' to accept the risk explicitly",
                        topology, notes=notes)
    new = _retire(topology, [*busy, *idle])
    moves: list[Move] = []
    for host in busy:
        names = sorted(n.name for n in topology.nodes_on(host))
        used = {m.to_host for m in moves}
        for spare in _spares_free(topology, [*busy, *idle, *used]):
            if _fits(new, names, spare):
                new = new.move_nodes(names, spare).with_(
                    spares=tuple(s for s in new.spares if s != spare))
                moves += [Move(n, host, spare) for n in names]
                break
        else:
            free = _spares_free(topology, [*busy, *idle, *used])
            why = f"spares left: {', '.join(free)}, none keeps the rules" if free else "no spare left"
            return Plan(Action.REFUSE, Reason.NO_SPARE,
                        f"no spare fits the nodes of {host} ({', '.join(names)}): {why}",
                        topology, notes=notes)
    in_place = tuple(sorted(n for n in failed_nodes if n not in {m.node for m in moves}))
    verify = tuple(sorted({*(m.node for m in moves), *in_place}))
    reason = "; ".join(f"host {h} failed: move {', '.join(m.node for m in moves if m.from_host == h)} "
                       f"to {next(m.to_host for m in moves if m.from_host == h)}" for h in busy)
    if in_place:
        reason += f"; replace {', '.join(in_place)} in place"
    return _checked(Plan(
        Action.FAILOVER, Reason.HOST_FAILED, reason, new, moves=tuple(moves),
        fence=tuple(busy), replace=in_place,
        prune=tuple([*busy, *idle]), verify=verify,
        steps=(Step.FENCE, Step.PRUNE_STATE, Step.WRITE_CONFIG, Step.UP, Step.VERIFY), notes=notes), topology)


def _heal_nodes(topology: Topology, nodes: tuple[str, ...], idle: list[str], history: History,
                now: float, notes: tuple[Note, ...]) -> Plan:
    limit = topology.watchdog.replace_attempts
    escalate = [n for n in nodes if history.replacements(n, now - ATTEMPT_WINDOW_S) >= limit]
    in_place = tuple(n for n in nodes if n not in escalate)
    new = _retire(topology, idle)
    moves: list[Move] = []
    for name in escalate:
        node = topology.nodes[name]
        used = [m.to_host for m in moves]
        # Prefer a spare this plan already uses, so one escalation costs one spare.
        candidates = [*dict.fromkeys(used), *_spares_free(new, [*idle, *used])]
        for spare in candidates:
            if _fits(new, [name], spare):
                new = new.move_nodes([name], spare).with_(
                    spares=tuple(s for s in new.spares if s != spare))
                moves.append(Move(name, node.host, spare))
                break
        else:
            return Plan(Action.REFUSE, Reason.NO_SPARE,
                        f"node {name} failed {limit} in-place replacements and no spare fits it",
                        topology, notes=notes)
    if moves:
        reason = "; ".join(f"node {m.node} still failing after {limit} replacements: move it from "
                           f"{m.from_host} to {m.to_host}" for m in moves)
        if in_place:
            reason += f"; replace {', '.join(in_place)} in place"
        return _checked(Plan(
            Action.FAILOVER, Reason.NODE_KEEPS_FAILING, reason, new, moves=tuple(moves),
            replace=in_place,
            prune=tuple(idle), verify=tuple(sorted(nodes)),
            steps=((Step.PRUNE_STATE,) if idle else ()) + (Step.WRITE_CONFIG, Step.UP, Step.VERIFY),
            notes=notes), topology)
    attempts = {n: history.replacements(n, now - ATTEMPT_WINDOW_S) + 1 for n in in_place}
    reason = "; ".join(f"node {n} failed on reachable host {topology.nodes[n].host}: replace it in "
                       f"place (attempt {attempts[n]} of {limit})" for n in in_place)
    steps = (Step.PRUNE_STATE, Step.WRITE_CONFIG) if idle else ()
    return _checked(Plan(Action.REPLACE, Reason.NODE_FAILED, reason, new, replace=in_place, prune=tuple(idle),
                         verify=in_place, steps=(*steps, Step.UP, Step.VERIFY), notes=notes), topology)
