"""Detection: turn a stream of probe results into failed targets, then into what failed.

Pure: the clock is whatever time the caller stamps on each observation, so tests drive it exactly.
A target is failed after `fail_threshold` consecutive failures spanning at least `fail_after_s`,
and healthy again after `recover_threshold` consecutive successes (hysteresis). The span runs
from when the first failed probe was asked for to the end of the latest one: measured that way,
three probes one interval apart never span "1.999 s" (or less, after waiting for a concurrency
slot behind hanging targets) and cost a fourth interval.

A target whose last probe failed (SUSPECT) is probed again every `suspect_interval_s` instead of
every `interval_s` until it is FAILED or HEALTHY (HAProxy's `fastinter`): `reprobe_at` says when.
With the defaults (interval 1 s, suspect interval 0.5 s, 3 failures spanning 1 s) a target that
turns bad is failed about 1 s after the first probe that sees it, instead of 2 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from components.topology import Topology, WatchdogSettings
from watchdog.reasons import Note, Reason
from watchdog.target import ProbeResult, TargetKey

# Timers may fire a hair early (asyncio wakes up within the clock resolution): a span this much
# short of `fail_after_s` still counts, so timer granularity never costs a whole extra interval.
SPAN_SLACK_S = 0.01


class State(StrEnum):
    UNKNOWN = "unknown"  # never probed
    HEALTHY = "healthy"
    SUSPECT = "suspect"  # failing, not yet for long enough
    FAILED = "failed"


@dataclass(frozen=True)
class Health:
    """What the detector knows about one target."""

    state: State = State.UNKNOWN
    failures: int = 0  # consecutive failed probes
    first_failure_at: float | None = None
    successes: int = 0  # consecutive good probes
    last_ok: bool | None = None
    last_error: str | None = None
    latency_s: float | None = None
    changed_at: float | None = None  # when `state` last changed


def step(health: Health, ok: bool, now: float, settings: WatchdogSettings,
         error: str | None = None, latency_s: float | None = None,
         asked_at: float | None = None) -> Health:
    """The next health of a target after one probe result observed at `now` (asked for at
    `asked_at`, default `now - latency_s`)."""
    h = replace(health, last_ok=ok, last_error=None if ok else error, latency_s=latency_s)
    if ok:
        h = replace(h, failures=0, first_failure_at=None, successes=h.successes + 1)
        if h.state is State.FAILED and h.successes < settings.recover_threshold:
            return h
        return _to(h, State.HEALTHY, now)
    started = asked_at if asked_at is not None else now - (latency_s or 0.0)
    first = h.first_failure_at if h.first_failure_at is not None else started
    h = replace(h, failures=h.failures + 1, first_failure_at=first, successes=0)
    if h.state is State.FAILED:
        return h
    if h.failures >= settings.fail_threshold and now - first >= settings.fail_after_s - SPAN_SLACK_S:
        return _to(h, State.FAILED, now)
    return _to(h, State.SUSPECT, now)


def _to(h: Health, state: State, now: float) -> Health:
    return h if h.state is state else replace(h, state=state, changed_at=now)


def reprobe_interval(settings: WatchdogSettings) -> float:
    """How often a SUSPECT target is probed: `suspect_interval_s`, never less often than the
    regular `interval_s` (a default suspect interval under a shorter interval yields to it)."""
    return min(settings.suspect_interval_s, settings.interval_s)


def reprobe_at(health: Health, asked_at: float, settings: WatchdogSettings) -> float | None:
    """When to probe a target again out of turn, given its health after the probe asked for at
    `asked_at`: one suspect interval later while it is SUSPECT; None when the regular rounds
    cover it (healthy, failed, recovering from failed, never probed)."""
    if health.state is not State.SUSPECT:
        return None
    return asked_at + reprobe_interval(settings)


def asked_time(result: ProbeResult) -> float:
    """When the probe behind `result` was asked for."""
    return result.asked_at if result.asked_at is not None else result.at - result.latency_s


class Detector:
    """The health of every target, updated from probe results (the one mutable piece here)."""

    def __init__(self, settings: WatchdogSettings) -> None:
        self.settings = settings
        self._health: dict[TargetKey, Health] = {}

    @property
    def health(self) -> Mapping[TargetKey, Health]:
        """Read-only: change it through observe, reset and forget."""
        return MappingProxyType(self._health)

    def observe(self, results: Iterable[ProbeResult]) -> list[TargetKey]:
        """Feed results; the keys whose state changed."""
        changed = []
        for r in results:
            old = self._health.get(r.key, Health())
            new = step(old, r.ok, r.at, self.settings, r.error, r.latency_s, asked_time(r))
            self._health[r.key] = new
            if new.state is not old.state:
                changed.append(r.key)
        return changed

    def reset(self, key: TargetKey) -> None:
        """Judge `key` afresh from its next probe on (UNKNOWN): a node just replaced or moved."""
        self._health[key] = Health()

    def forget(self, keys: Iterable[TargetKey]) -> None:
        """Drop what is known of `keys` (a node that moved is a new VM)."""
        for key in keys:
            self._health.pop(key, None)

    def forget_except(self, keys: Iterable[TargetKey]) -> None:
        """Drop targets that are no longer in the topology (after a failover, say)."""
        keep = set(keys)
        self.forget([k for k in self._health if k not in keep])


@dataclass(frozen=True)
class Failures:
    """What failed, as the planner needs it."""

    hosts: tuple[str, ...] = ()  # host unreachable and every node on it failed (or it has none)
    nodes: tuple[str, ...] = ()  # node failed on a reachable host
    isolated: bool = False  # too much failing at once: suspect our own network
    failing: int = 0  # targets whose last probe failed
    total: int = 0
    notes: tuple[Note, ...] = ()  # failures we deliberately do not act on, and why

    @property
    def empty(self) -> bool:
        return not (self.hosts or self.nodes or self.isolated)


def classify(topology: Topology, health: Mapping[TargetKey, Health],
             settings: WatchdogSettings | None = None) -> Failures:
    """Decide what failed: host failure, node failure, or our own isolation."""
    settings = settings or topology.watchdog
    host_keys = {h: TargetKey.host(h) for h in topology.live_hosts}
    node_keys = {n: TargetKey.node(n) for n in topology.nodes}
    known = [k for k in (*host_keys.values(), *node_keys.values()) if k in health]
    failing = sum(1 for k in known if health[k].last_ok is False or health[k].state is State.FAILED)
    total = len(known)
    if total and failing / total > settings.max_unhealthy_share:
        return Failures(isolated=True, failing=failing, total=total, notes=(Note(
            Reason.ISOLATION_SUSPECTED,
            f"{failing} of {total} targets failing (more than {settings.max_unhealthy_share:.0%}): "
            "suspecting the watchdog's own network; acting on nothing"),))

    def failed(key: TargetKey | None) -> bool:
        return key is not None and key in health and health[key].state is State.FAILED

    hosts: list[str] = []
    notes: list[Note] = []
    for host, key in host_keys.items():
        if not failed(key):
            continue
        on_it = topology.nodes_on(host)
        answering = [n.name for n in on_it if health.get(node_keys[n.name], Health()).last_ok]
        if answering:
            notes.append(Note(Reason.MANAGEMENT_NETWORK_SUSPECTED,
                              f"host {host} is unreachable but {', '.join(sorted(answering))} still "
                              "answer: management network trouble? not acting on it", (host,)))
        elif all(failed(node_keys[n.name]) for n in on_it):
            hosts.append(host)
        # else: its nodes are failing but not failed yet; wait for them
    nodes: list[str] = []
    for name, key in node_keys.items():
        if not failed(key):
            continue
        host = topology.nodes[name].host
        if host in hosts:
            continue
        host_key = host_keys.get(host)
        if failed(host_key):
            if any(health.get(node_keys[n.name], Health()).last_ok for n in topology.nodes_on(host)):
                notes.append(Note(Reason.NODE_ON_UNREACHABLE_HOST,
                                  f"node {name} failed and its host {host} is unreachable while "
                                  "other nodes on it answer: not acting on it", (name,)))
            # else: the other nodes on it are failing but not failed yet; wait for them
            continue
        if host_key is not None and health.get(host_key, Health()).last_ok is False:
            # Its host is failing too, not failed yet (suspects are re-probed at their own pace:
            # a host whose probe hangs lags nodes that refuse at once). A host failure in the
            # making, not a node failure: wait until the host is failed, or answers again.
            continue
        nodes.append(name)
    return Failures(tuple(sorted(hosts)), tuple(sorted(nodes)), False, failing, total, tuple(notes))
