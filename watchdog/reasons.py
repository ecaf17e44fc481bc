"""Reason codes: every verdict the watchdog gives carries one, beside a message for people.

Machines (log shippers, alert routing, de-duplication) read the code; people read the message
(as Cluster API's MachineHealthCheck pairs a condition's Reason with its Message). A code names a
kind of verdict and never carries numbers or names, so it is stable across repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Reason(StrEnum):
    # A plan that acts, or has nothing to do.
    NOTHING_FAILED = "nothing_failed"
    HOST_FAILED = "host_failed"  # fence the host, move its nodes to spares
    NODE_FAILED = "node_failed"  # replace the node in place on its reachable host
    NODE_KEEPS_FAILING = "node_keeps_failing"  # in-place replacements used up: move it
    IDLE_HOST_FAILED = "idle_host_failed"  # a host running no node: drop it, no deploy
    # A plan that refuses.
    ISOLATION_SUSPECTED = "isolation_suspected"  # too much fails at once: our own network?
    UNKNOWN_TARGET = "unknown_target"
    ALREADY_FAILED = "already_failed"
    COOLDOWN = "cooldown"
    OVER_BUDGET = "over_budget"
    NO_FENCE_COMMAND = "no_fence_command"
    NO_SPARE = "no_spare"
    RULE_BROKEN = "rule_broken"  # the new topology would break a rule of the model
    PARTITIONED = "partitioned"  # a host cut off from the watchdog only: its peers still see it
    DB_DATA_NEEDS_PERSON = "db_data_needs_person"  # a DB node on a fresh disk, no peer with data
    # A failure deliberately not acted on (a note).
    MANAGEMENT_NETWORK_SUSPECTED = "management_network_suspected"
    NODE_ON_UNREACHABLE_HOST = "node_on_unreachable_host"
    DEPENDENT_FAILURE = "dependent_failure"  # the node works; a dependency of its own is down
    # What happened to a remediation (alerts).
    REMEDIATED = "remediated"
    UP_FAILED = "up_failed"
    VERIFY_FAILED = "verify_failed"
    REMEDIATION_FAILED = "remediation_failed"
    ABANDONED = "abandoned"
    STACK_FILE_CHANGED = "stack_file_changed"  # edited since the plan: nothing written over it
    STACK_FILE_REVERTED = "stack_file_reverted"  # no longer holds the plan's result before `up`
    UP_TIMED_OUT = "up_timed_out"
    ORPHAN_ENDED = "orphan_ended"  # a child an earlier watchdog left running was ended
    GIT_FAILED = "git_failed"
    # The loop itself (it keeps watching on the last good topology).
    STACK_FILE_INVALID = "stack_file_invalid"
    WATCHDOG_IO_FAILED = "watchdog_io_failed"  # state or stacks directory not writable, ...
    FENCED_HOST_ANSWERS = "fenced_host_answers"  # a host in mac:failedHosts is back: split brain?
    # Several watchdogs on etcd (watchdog.leader).
    ETCD_UNAVAILABLE = "etcd_unavailable"  # no quorum or unreachable: nobody may act
    LEADERSHIP_LOST = "leadership_lost"  # a leader lost its lease; it stopped acting
    # An operator's reclaim.
    HOST_RECLAIMED = "host_reclaimed"
    # Read from a journal written before reason codes existed.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Note:
    """A verdict not acted on: its code, the message, and the targets it is about (so one
    de-duplicates per target, not per wording)."""

    code: Reason
    message: str
    about: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[Reason, tuple[str, ...]]:
        return (self.code, self.about)

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "about": list(self.about)}

    @classmethod
    def from_json(cls, raw: dict[str, Any] | str) -> Note:
        if isinstance(raw, str):  # a journal written before reason codes
            return cls(Reason.UNKNOWN, raw)
        return cls(Reason(raw["code"]), raw["message"], tuple(raw.get("about", ())))
