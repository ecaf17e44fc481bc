"""When to probe what: every target once per round, a round every `interval`; and a suspect target
(its last probe failed, not failed for long enough yet) again every `suspect_interval` in a fast
lane of its own, until it is failed or healthy (HAProxy's `fastinter`).

The lanes run beside the rounds, never in them: a round does not wait for a lane and skips the
targets the lanes hold (one probe per target at a time), and lane probes take slots of their own
(`Prober.probe(fast=True)`), so re-probing suspects never delays the probing of the others.
Nothing here blocks the event loop; every time is read from the prober's clock.

When a lane turns a target failed, the next round starts at once instead of up to an interval
later: what is then decided about it (`classify`'s isolation guard and host-versus-node rules)
is decided on a fresh result of every other target, as it was when failures were only confirmed
at the end of a round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

from components.topology import WatchdogSettings
from watchdog.detect import Detector, Health, State, asked_time, reprobe_at
from watchdog.probe import Prober
from watchdog.target import ProbeResult, Target, TargetKey

# Called when a target changes state, or the dependency it reports degraded changes.
OnChange = Callable[[TargetKey, Health], None]
OnResult = Callable[[ProbeResult], None]


class Sweeper:
    """Rounds and fast lanes for one prober and one detector (use inside the prober's block)."""

    def __init__(self, prober: Prober, detector: Detector, settings: WatchdogSettings,
                 on_change: OnChange | None = None, on_result: OnResult | None = None) -> None:
        self.prober = prober
        self.detector = detector
        self.settings = settings
        self.on_change: OnChange = on_change or (lambda key, health: None)
        self.on_result: OnResult = on_result or (lambda result: None)  # every result (metrics)
        self._targets: dict[TargetKey, Target] = {}
        self._lanes: dict[TargetKey, asyncio.Task[None]] = {}
        self._failed_in_lane = asyncio.Event()

    @property
    def in_lanes(self) -> frozenset[TargetKey]:
        """The keys of the targets being re-probed out of turn."""
        return frozenset(self._lanes)

    async def round(self, targets: Sequence[Target]) -> None:
        """Probe every target no lane holds; feed each result to the detector as it arrives (a
        target hanging until its timeout holds back nobody), and put new suspects in a lane."""
        self._targets = {t.key: t for t in targets}
        async for result in self.prober.probe_each([t for t in targets if t.key not in self._lanes]):
            self._observe(result, fast=False)
        # Whatever a lane turned failed during this round is decided on this round's results.
        self._failed_in_lane.clear()

    async def pause(self, started: float) -> None:
        """Wait until the round after the one started at `started` is due, or less: not past the
        moment a lane turns a target failed."""
        delay = started + self.settings.interval_s - self.prober.clock()
        if delay <= 0 or self._failed_in_lane.is_set():
            self._failed_in_lane.clear()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._failed_in_lane.wait()
        self._failed_in_lane.clear()

    async def close(self) -> None:
        """Stop every lane (before the prober's block closes its connections)."""
        lanes = list(self._lanes.values())
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        self._lanes.clear()

    def _observe(self, result: ProbeResult, fast: bool) -> Health | None:
        self.on_result(result)
        old = self.detector.health.get(result.key)
        self.detector.observe([result])
        health = self.detector.health.get(result.key)
        if health is None:
            return None
        if old is None or old.state is not health.state or old.degraded != health.degraded:
            self.on_change(result.key, health)
            if fast and health.state is State.FAILED:
                self._failed_in_lane.set()
        if not fast and result.key not in self._lanes:
            due = reprobe_at(health, asked_time(result), self.settings)
            if due is not None:
                self._lanes[result.key] = asyncio.create_task(self._lane(result.key, due))
        return health

    async def _lane(self, key: TargetKey, due: float) -> None:
        """Re-probe one suspect target every suspect interval (from when each probe was asked
        for) until the detector holds it failed or healthy, or it leaves the topology."""
        try:
            while True:
                await asyncio.sleep(max(0.0, due - self.prober.clock()))
                target = self._targets.get(key)
                health = self.detector.health.get(key)
                if target is None or health is None or health.state is not State.SUSPECT:
                    return  # left the topology, or judged afresh meanwhile (a moved node, say)
                result = await self.prober.probe(target, fast=True)
                health = self._observe(result, fast=True)
                next_due = None if health is None else reprobe_at(health, asked_time(result),
                                                                  self.settings)
                if next_due is None:
                    return  # failed or healthy: back to the rounds
                due = next_due
        finally:
            self._lanes.pop(key, None)
