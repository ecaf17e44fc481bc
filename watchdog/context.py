"""Where a stack lives and how to reach things: the collaborators every command shares.

Paths, the journal, and factories for what touches the world (the Pulumi backend, the remediator,
alerts, probes). Tests replace a collaborator by passing their own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.stack_file import load_topology, stack_path
from components.topology import Topology
from watchdog.alert import Alerter
from watchdog.children import Children
from watchdog.coordinate import Coordinator, Solo
from watchdog.deploy import Deployer
from watchdog.events import EventSink, ignore
from watchdog.fence import DEFAULT_FENCE_TIMEOUT_S, fence
from watchdog.git import GitRecorder
from watchdog.journal import Journal
from watchdog.plan import Plan
from watchdog.probe import Prober, TransportFactory
from watchdog.remediate import Fencer, Remediator, StateBackend
from watchdog.target import ProbeResult, Target, TargetKey, targets


@dataclass(frozen=True)
class Seams:
    """What a caller of `mac-watchdog` plugs in (tests, benchmarks): who listens to the events,
    and how probes travel. `cli.main(argv, seams)` hands them to every command."""

    events: EventSink = ignore
    transport: TransportFactory | None = None


@dataclass
class Context:
    """Where a stack lives and how to reach things; shared by every command."""

    project_dir: Path
    stack: str
    state_dir: Path
    pulumi_root: Path | None = None
    transport: TransportFactory | None = None  # how probes travel (default: watchdog.probe's)
    fencer: Fencer = fence
    fence_timeout_s: float = DEFAULT_FENCE_TIMEOUT_S
    backend: StateBackend | None = None
    up_attempts: int = 3
    backoff_s: float = 15.0
    max_failures: int = 8  # failed attempts before an open remediation is abandoned
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time
    alerter: Alerter | None = None
    events: EventSink = ignore  # who listens: journal entries and alerts as they happen
    coordinator: Coordinator = field(default_factory=Solo)  # who may act (watchdog.leader)
    git: GitRecorder | None = None  # `run --git-commit`: commit (and push) every stack file written
    journal: Journal = field(init=False)

    def __post_init__(self) -> None:
        self.journal = Journal(self.state_dir, self.clock, self.events)

    @property
    def stack_file(self) -> Path:
        return stack_path(self.project_dir, self.stack)

    def topology(self) -> Topology:
        return load_topology(self.stack_file)

    def alerts(self, topology: Topology) -> Alerter:
        if self.alerter is None:
            self.alerter = Alerter(topology.watchdog.webhook_url, self.stack, events=self.events)
        return self.alerter

    def deployer(self) -> StateBackend:
        """One backend per context: the CLI is found and the stack selected once, not per step."""
        if self.backend is None:
            self.backend = Deployer(self.project_dir, self.stack, pulumi_root=self.pulumi_root,
                                    children=self.children())
        return self.backend

    def children(self) -> Children:
        """The record of the child (fence, Pulumi CLI) that runs now, kept in the state dir."""
        return Children(self.state_dir)

    def remediator(self, topology: Topology) -> Remediator:
        alerter = self.alerts(topology)
        after_write: Callable[[Plan], None] | None = None
        if self.git is not None:
            git = self.git

            def after_write(p: Plan) -> None:
                git.commit(p, alerter)
        fencer = functools.partial(fence, children=self.children()) if self.fencer is fence else self.fencer
        return Remediator(stack_file=self.stack_file, state_dir=self.state_dir, backend=self.deployer(),
                          journal=self.journal, alerter=alerter, verifier=self.verify,
                          fencer=fencer, fence_timeout_s=self.fence_timeout_s,
                          up_attempts=self.up_attempts, backoff_s=self.backoff_s, sleep=self.sleep,
                          children=self.children(), after_write=after_write, guard=self.coordinator)

    def verify(self, topology: Topology, nodes: Sequence[str], timeout_s: float) -> list[str]:
        """Probe `nodes` until each answered healthy, with no dependency degraded, once; the
        ones that never did (a replaced DB node is done when Synced, not when it answers)."""
        return asyncio.run(self._verify(topology, nodes, timeout_s))

    async def _verify(self, topology: Topology, nodes: Sequence[str], timeout_s: float) -> list[str]:
        wanted = {TargetKey.node(n) for n in nodes}
        items = [t for t in targets(topology) if t.key in wanted]
        settings = topology.watchdog
        deadline = time.monotonic() + timeout_s
        async with self.prober(settings.probe_timeout_s) as prober:
            while items:
                results = await prober.probe_all(items)
                healthy = {r.key for r in results if r.ok and r.degraded is None}
                items = [t for t in items if t.key not in healthy]
                if not items or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(settings.interval_s, max(0.0, deadline - time.monotonic())))
        return sorted(t.name for t in items)

    def prober(self, timeout_s: float, **options: Any) -> Prober:
        """A Prober that probes through this context's transport."""
        return Prober(timeout_s, transport=self.transport, **options)

    def targets(self, topology: Topology) -> list[Target]:
        return targets(topology)

    async def probe(self, items: Sequence[Target], timeout_s: float) -> list[ProbeResult]:
        """One round of probes of `items` with fresh connections (one-shot commands)."""
        async with self.prober(timeout_s) as prober:
            return await prober.probe_all(items)

    async def probe_all(self, topology: Topology) -> list[ProbeResult]:
        return await self.probe(self.targets(topology), topology.watchdog.probe_timeout_s)
