"""What a stack remembers between deploys outside its stack file: the DB cluster was founded, and
which hosts were taken out of service (fenced).

The program exports it as the stack output `macRecord` and reads it back at the next deploy
(a StackReference to the stack itself), so an old copy of the stack file (a git checkout from
before a failover, a colleague's CI run) cannot put nodes back on a fenced host or let a fresh
DB node found a second, empty cluster. Pure: no Pulumi imports here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from components.topology import Problem, Topology

RECORD_OUTPUT = "macRecord"


@dataclass(frozen=True)
class StackRecord:
    founded: bool = False  # the Galera cluster was founded: a fresh datadir never bootstraps again
    fenced_hosts: tuple[str, ...] = ()  # out of service until `mac-watchdog reclaim HOST`


def parse_record(value: Any) -> StackRecord:
    """The record from the stack output (None or a missing key: nothing recorded yet)."""
    if not isinstance(value, Mapping):
        return StackRecord()
    fenced = value.get("fencedHosts") or []
    hosts = tuple(sorted({str(h) for h in fenced})) if isinstance(fenced, list) else ()
    return StackRecord(founded=value.get("founded") is True, fenced_hosts=hosts)


def record_output(record: StackRecord) -> dict[str, Any]:
    """The stack output's value (the inverse of `parse_record`)."""
    return {"founded": record.founded, "fencedHosts": sorted(record.fenced_hosts)}


def next_record(previous: StackRecord, topology: Topology, founded_now: bool) -> StackRecord:
    """What this deploy records: nothing is forgotten except through `reclaim`; every host the
    stack file lists in mac:failedHosts is recorded as fenced."""
    fenced = sorted(set(previous.fenced_hosts) | set(topology.failed_hosts))
    return StackRecord(founded=previous.founded or founded_now, fenced_hosts=tuple(fenced))


def placement_problems(topology: Topology, record: StackRecord) -> list[Problem]:
    """Hosts the record says are fenced that this stack file uses again (empty when it may deploy).

    A host stays out of service until a person reclaims it (`mac-watchdog reclaim HOST` drops it
    from the record); a stack file that brings it back without that is an old copy.
    """
    problems = []
    for host in record.fenced_hosts:
        if host not in topology.hosts or host in topology.failed_hosts:
            continue
        nodes = sorted(n.name for n in topology.nodes_on(host))
        use = f"places {', '.join(nodes)} on it" if nodes else "lists it as a spare"
        problems.append(Problem(
            "mac:failedHosts", host,
            f"was fenced (the stack's record) but this stack file {use}: is it an old copy "
            "from before a failover? Take the current stack file; once the host is repaired, "
            f"`mac-watchdog reclaim {host}` puts it back"))
    return problems


STACK_TYPE = "pulumi:pulumi:Stack"


def _stack_resource(deployment: Mapping[str, Any]) -> dict[str, Any] | None:
    resources = deployment.get("resources")
    if not isinstance(resources, list):
        return None
    return next((r for r in resources if isinstance(r, dict) and r.get("type") == STACK_TYPE), None)


def record_in_state(deployment: Mapping[str, Any]) -> StackRecord:
    """The record as an exported state holds it (the root stack's outputs)."""
    stack = _stack_resource(deployment)
    outputs = (stack or {}).get("outputs") or {}
    return parse_record(outputs.get(RECORD_OUTPUT) if isinstance(outputs, Mapping) else None)


def with_record_in_state(deployment: Mapping[str, Any], record: StackRecord) -> dict[str, Any]:
    """A copy of an exported state whose root stack outputs hold `record` (for `stack import`):
    the watchdog records a fence before the deploy and drops a host when a person reclaims it.
    A state without a root stack (never deployed) gets no record: nothing there to protect."""
    out = dict(deployment)
    resources = [dict(r) if isinstance(r, dict) and r.get("type") == STACK_TYPE else r
                 for r in deployment.get("resources") or []]
    out["resources"] = resources
    stack = _stack_resource(out)
    if stack is not None:
        outputs = dict(stack.get("outputs") or {})
        outputs[RECORD_OUTPUT] = record_output(record)
        stack["outputs"] = outputs
    return out


def fenced(record: StackRecord, hosts: list[str]) -> StackRecord:
    return StackRecord(record.founded, tuple(sorted(set(record.fenced_hosts) | set(hosts))))


def reclaimed(record: StackRecord, host: str) -> StackRecord:
    return StackRecord(record.founded, tuple(h for h in record.fenced_hosts if h != host))
