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

A node whose self-check answers 200 works, even when it names a degraded dependency (an LB
without web servers, a DB node in a view change or a state transfer, a web node without its DB):
that is reported, and noted when it lasts, but never counts as a failure of that node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType

from components.topology import Topology, WatchdogSettings
from watchdog.reasons import Note, Reason
from watchdog.target import Kind, ProbeResult, TargetKey

# Timers may fire a hair early (asyncio wakes up within the clock resolution): a span this much
# short of `fail_after_s` still counts, so timer granularity never costs a whole extra interval.
SPAN_SLACK_S = 0.01


# How long a dead member can still look alive to its peers. HAProxy marks a silent server down
# after 2 failed checks 500 ms apart (about 1.25 s, components/roles/lb.py); Galera evicts a silent
# member after evs.inactive_timeout and installs the new view within evs.install_timeout (1.5 s +
# 1.5 s with components/roles/mysql.py's EVS_OPTIONS; a unit test keeps the two equal). Until then
# a peer that still lists a node of an unreachable host is no evidence that the watchdog, not the
# host, is cut off: the decision waits that long at most.
PEER_VIEW_LAG_S = 3.0
# A dependency degraded this long (longer than a view change, PEER_VIEW_LAG_S, and an IST donor
# phase, ~0.5 s measured) is noted and alerted; shorter ones are only logged as health changes.
DEGRADED_NOTE_AFTER_S = 10.0


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
    # The dependency the node's last good probe named as degraded, since when (without a break),
    # and the peer IPs it sees up: never part of `state`.
    degraded: str | None = None
    degraded_since: float | None = None
    sees: frozenset[str] = frozenset()


def step(health: Health, ok: bool, now: float, settings: WatchdogSettings,
         error: str | None = None, latency_s: float | None = None,
         asked_at: float | None = None, degraded: str | None = None,
         sees: frozenset[str] = frozenset()) -> Health:
    """The next health of a target after one probe result observed at `now` (asked for at
    `asked_at`, default `now - latency_s`); `degraded` and `sees` as the node reported them."""
    degraded = degraded if ok else None
    since = None if degraded is None else (
        health.degraded_since if health.degraded is not None else now)
    h = replace(health, last_ok=ok, last_error=None if ok else error, latency_s=latency_s,
                degraded=degraded, degraded_since=since, sees=sees if ok else frozenset())
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
            new = step(old, r.ok, r.at, self.settings, r.error, r.latency_s, asked_time(r),
                       r.degraded, r.sees)
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
    # Hosts unreachable from the watchdog whose nodes their peers still see up: cut off from us,
    # not dead. Never failed over.
    partitioned: tuple[str, ...] = ()
    # Why nothing is decided yet although something failed: a fault still unfolding (targets
    # failing but not failed yet, peers that may not have noticed a death yet).
    waiting: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.hosts or self.nodes or self.isolated or self.partitioned)


def _degraded_notes(topology: Topology, health: Mapping[TargetKey, Health],
                    now: float | None) -> list[Note]:
    """A node that works while a dependency of its own has been down for long: worth a person's
    look (and an alert), never a remediation of that node."""
    if now is None:
        return []
    notes = []
    for name in sorted(topology.nodes):
        h = health.get(TargetKey.node(name))
        if h is None or not h.last_ok or h.degraded is None or h.degraded_since is None:
            continue
        if now - h.degraded_since >= DEGRADED_NOTE_AFTER_S:
            notes.append(Note(Reason.DEPENDENT_FAILURE,
                              f"node {name} works but reports a dependency down for "
                              f"{now - h.degraded_since:.0f} s: {h.degraded}; not acting on {name}",
                              (name,)))
    return notes


def _seen_by_peers(topology: Topology, health: Mapping[TargetKey, Health], host: str) -> list[str]:
    """`peer sees node` for each node of `host` that a node elsewhere, answering the watchdog,
    reports up in its own view (HAProxy's checks, Galera's component)."""
    on_it = {n.ip: n.name for n in topology.nodes_on(host)}
    seen = []
    for peer in sorted(topology.nodes.values(), key=lambda n: n.name):
        h = health.get(TargetKey.node(peer.name))
        if peer.host == host or h is None or not h.last_ok:
            continue
        seen += [f"{peer.name} sees {on_it[ip]}" for ip in sorted(h.sees) if ip in on_it]
    return seen


def classify(topology: Topology, health: Mapping[TargetKey, Health],
             settings: WatchdogSettings | None = None, now: float | None = None) -> Failures:
    """Decide what failed: host failure, node failure, our own isolation, or a host cut off from
    us only. With `now` (the detector's clock), a fault still unfolding is waited for, so that one
    decision covers all of it, and lasting degradations are noted."""
    settings = settings or topology.watchdog
    host_keys = {h: TargetKey.host(h) for h in topology.live_hosts}
    node_keys = {n: TargetKey.node(n) for n in topology.nodes}
    known = [k for k in (*host_keys.values(), *node_keys.values()) if k in health]
    # Only a target's own failure counts: a node that answers while a dependency is down
    # (degraded) is not failing, so the failures a dependency causes never tip this guard.
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
    partitioned: list[str] = []
    waiting: list[str] = []
    notes: list[Note] = _degraded_notes(topology, health, now)
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
            seen = _seen_by_peers(topology, health, host)
            failed_at = health[key].changed_at
            if not seen:
                hosts.append(host)
            elif now is None or failed_at is None or now - failed_at >= PEER_VIEW_LAG_S:
                partitioned.append(host)
                notes.append(Note(Reason.PARTITIONED, f"host {host} and its nodes are unreachable "
                                  f"from the watchdog, but their peers still see them "
                                  f"({'; '.join(seen)}): cut off from the watchdog, not dead; "
                                  "not acting on it", (host,)))
            else:
                waiting.append(f"peers still see nodes of {host} ({'; '.join(seen)})")
        # else: its nodes are failing but not failed yet; wait for them
    nodes: list[str] = []
    for name, key in node_keys.items():
        if not failed(key):
            continue
        host = topology.nodes[name].host
        if host in hosts or host in partitioned:
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
    if now is not None and (hosts or nodes):
        waiting += _unfolding(health, [host_keys[h] for h in hosts] + [node_keys[n] for n in nodes],
                              settings, now)
    if waiting:
        return Failures((), (), False, failing, total, tuple(notes), (), tuple(waiting))
    return Failures(tuple(sorted(hosts)), tuple(sorted(nodes)), False, failing, total, tuple(notes),
                    tuple(sorted(partitioned)))


def _unfolding(health: Mapping[TargetKey, Health], acting_on: list[TargetKey],
               settings: WatchdogSettings, now: float) -> list[str]:
    """Targets failing but not failed yet while others already are: the same fault may still be
    unfolding (two nodes killed a few milliseconds apart land in different rounds). The decision
    waits for them, so one plan covers the whole fault, but never longer than a suspect needs to
    be judged (the failure window plus a re-probe) after the latest failure it would act on."""
    latest = max((health[k].changed_at or now for k in acting_on), default=now)
    if now - latest >= settings.fail_after_s + reprobe_interval(settings):
        return []
    # Hosts and nodes only: the LB pair's VIP is never acted on, so no plan waits for it.
    return [f"{k} failing, not failed yet" for k, h in sorted(health.items())
            if h.last_ok is False and h.state is not State.FAILED and k not in acting_on
            and k.kind is not Kind.VIP]
