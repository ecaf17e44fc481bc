"""Who may act: the seam between the run loop and several watchdogs sharing one stack.

A watchdog alone always may (`Solo`); with etcd, only the leader may (watchdog.leader). The loop
asks once per round; the remediator asks before every step (the `StepGuard` half).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from components.topology import Topology
from watchdog.detect import Failures
from watchdog.plan import Plan, Step
from watchdog.remediate import NoGuard


@dataclass(frozen=True)
class Turn:
    """The answer for one round: may this watchdog plan and act, and the topology to watch from
    now on when the shared record changed it (None: keep the current one)."""

    act: bool
    topology: Topology | None = None


class Coordinator(Protocol):
    def turn(self, topology: Topology, failures: Failures) -> Turn:
        """Called once per round, in a worker thread (it may wait on the network)."""

    def before_step(self, rid: str, p: Plan, step: Step) -> None: ...

    def after_step(self, rid: str, p: Plan, step: Step, status: str,
                   detail: Mapping[str, Any]) -> None: ...

    def finished(self, rid: str, p: Plan, outcome: str) -> None: ...

    def close(self) -> None:
        """Leave: give up leadership at once, so another watchdog need not wait for the lease."""


class Solo(NoGuard):
    """The only watchdog of its stack: it always may act."""

    def turn(self, topology: Topology, failures: Failures) -> Turn:
        return Turn(True)

    def close(self) -> None:
        pass
