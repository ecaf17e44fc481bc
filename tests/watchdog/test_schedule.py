"""Rounds and fast re-probes of suspects (watchdog.schedule) on a virtual clock: the real Sweeper,
the real Prober (slots, timeouts, time stamps) and the real detector; only the network is scripted.
Plus the `suspectInterval` setting."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.topology import Topology, TopologyError, WatchdogSettings, parse_topology, to_config
from watchdog.detect import Detector, Health, State, classify, reprobe_at, reprobe_interval, step
from watchdog.plan import Action, History, Remediation, plan
from watchdog.probe import DEFAULT_CONCURRENCY, DEFAULT_FAST_CONCURRENCY, Prober
from watchdog.schedule import Sweeper
from watchdog.target import Kind, ProbeResult, Target, TargetKey, targets

from .virtual_time import run

nk, hk = TargetKey.node, TargetKey.host

DEFAULTS = WatchdogSettings()
H, U, F = State.HEALTHY, State.SUSPECT, State.FAILED
LATENCY = 0.002

# What a target does at a (virtual) time: answer "ok", answer "503", or "hang" past the timeout.
Script = Callable[[float], str]


def bad_between(start: float, end: float = float("inf"), how: str = "503") -> Script:
    return lambda t: how if start <= t < end else "ok"


@dataclass
class Probe:
    key: TargetKey
    asked: float
    fast: bool


class ScriptedTransport:
    """A transport whose targets answer as their scripts say, in virtual time."""

    def __init__(self, prober: ScriptedProber) -> None:
        self.prober = prober

    async def http_get(self, key: TargetKey, url: str) -> int:
        return 200 if await self.prober.answer(self.prober.scripts[key]) == "ok" else 503

    async def connect(self, address: str) -> None:
        if await self.prober.answer(self.prober.by_address[address]) != "ok":
            raise ConnectionRefusedError

    def drop(self, key: TargetKey) -> None:
        pass

    async def aclose(self) -> None:
        pass


class ScriptedProber(Prober):
    """The real Prober (slots, timeout, stamps) with the network replaced by scripts."""

    def __init__(self, scripts: dict[TargetKey, Script], t0: float, concurrency: int = DEFAULT_CONCURRENCY,
                 fast_concurrency: int = DEFAULT_FAST_CONCURRENCY) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(DEFAULTS.probe_timeout_s, concurrency, clock=loop.time,
                         fast_concurrency=fast_concurrency,
                         transport=lambda timeout_s, connections: ScriptedTransport(self))
        self.scripts = scripts
        self.by_address: dict[str, Script] = {}
        self.t0 = t0
        self.log: list[Probe] = []
        self.results: list[ProbeResult] = []  # times relative to t0

    async def probe(self, target: Target, fast: bool = False) -> ProbeResult:
        self.log.append(Probe(target.key, self.clock() - self.t0, fast))
        self.by_address[target.address] = self.scripts[target.key]
        result = await super().probe(target, fast)
        asked = result.asked_at if result.asked_at is not None else result.at
        self.results.append(replace(result, at=result.at - self.t0, asked_at=asked - self.t0))
        return result

    async def answer(self, script: Script) -> str:
        how = script(self.clock() - self.t0)
        if how == "hang":
            await asyncio.sleep(3600)
        await asyncio.sleep(LATENCY)
        return how

    def asked(self, key: TargetKey, fast: bool | None = None) -> list[float]:
        return [p.asked for p in self.log if p.key == key and (fast is None or p.fast == fast)]


def node(name: str) -> Target:
    return Target(Kind.NODE, name, f"http://{name}/health", "web")


@dataclass
class Trace:
    prober: ScriptedProber
    detector: Detector
    changes: list[tuple[float, TargetKey, State]] = field(default_factory=list)

    def failed_at(self, key: TargetKey) -> float | None:
        return next((t for t, k, s in self.changes if k == key and s is F), None)


def sweep(scripts: dict[str, Script], seconds: float, s: WatchdogSettings = DEFAULTS,
          each_round: Callable[[Trace, float], None] | None = None, **kw: int) -> Trace:
    """Run rounds and lanes, as `run` does, for `seconds` of virtual time from t=0."""
    async def main() -> Trace:
        t0 = asyncio.get_running_loop().time()
        items = [node(name) for name in scripts]
        prober = ScriptedProber({nk(k): v for k, v in scripts.items()}, t0, **kw)
        async with prober:
            trace = Trace(prober, Detector(s))
            sweeper = Sweeper(prober, trace.detector, s,
                              on_change=lambda k, h: trace.changes.append((prober.clock() - t0, k, h.state)))
            try:
                while prober.clock() - t0 < seconds:
                    started = prober.clock()
                    await sweeper.round(items)
                    if each_round is not None:
                        each_round(trace, prober.clock() - t0)
                    await sweeper.pause(started)
            finally:
                await sweeper.close()
            return trace
    return run(main())


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise(times)]


# ---- the pure pieces --------------------------------------------------------------------------

def test_defaults_fail_after_three_probes_half_a_second_apart() -> None:
    assert (DEFAULTS.interval_s, DEFAULTS.suspect_interval_s, DEFAULTS.fail_threshold,
            DEFAULTS.fail_after_s) == (1.0, 0.5, 3, 1.0)
    h = Health()
    states = []
    for asked in (10.0, 10.5, 11.0):
        h = step(h, False, asked + LATENCY, DEFAULTS, "HTTP 503", LATENCY, asked)
        states.append(h.state)
    assert states == [U, U, F]
    # three failures spanning less than failAfter are not enough
    h = Health()
    for asked in (10.0, 10.4, 10.8):
        h = step(h, False, asked + LATENCY, DEFAULTS, "HTTP 503", LATENCY, asked)
    assert h.state is U and h.failures == 3


def test_reprobe_at_only_while_suspect() -> None:
    assert reprobe_at(Health(state=U), 5.0, DEFAULTS) == 5.5
    for state in (State.UNKNOWN, H, F):
        assert reprobe_at(Health(state=state), 5.0, DEFAULTS) is None


def test_default_suspect_interval_yields_to_a_shorter_interval() -> None:
    s = WatchdogSettings(interval_s=0.05)
    assert reprobe_interval(s) == 0.05
    assert reprobe_interval(WatchdogSettings(interval_s=2.0, suspect_interval_s=0.2)) == 0.2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(0.01, 2.0)), max_size=40), st.integers(2, 5))
def test_property_single_failures_between_successes_never_fail(
        outcomes: list[tuple[bool, float]], n: int) -> None:
    """One-probe blips: no two failures in a row, at any pace, never make a target failed."""
    s = WatchdogSettings(fail_threshold=n, fail_after_s=0.0)
    h, t, last_ok = Health(), 0.0, True
    for ok, gap in outcomes:
        ok = ok or not last_ok  # never two failures in a row
        t += gap
        h = step(h, ok, t, s)
        assert h.state is not F
        last_ok = ok


# ---- rounds and fast lanes on the virtual clock -----------------------------------------------

def test_suspect_is_reprobed_every_suspect_interval_healthy_every_interval() -> None:
    trace = sweep({"a": bad_between(99), "b": bad_between(2.3)}, seconds=8.0)
    p = trace.prober
    # b: seen failing by the round at 3.0, re-probed out of turn at 3.5 and 4.0, failed then:
    # 3 failures spanning 1.002 s (>= failAfter 1 s), 1 s after the first failing probe.
    assert p.asked(nk("b"), fast=True) == pytest.approx([3.5, 4.0])
    assert trace.failed_at(nk("b")) == pytest.approx(4.0 + LATENCY)
    assert trace.detector.health[nk("b")].failures >= 3
    # a failed target is back to the rounds (no lane); it was failed during the round at 4.0,
    # so that round's decision sees it and no early round is needed
    assert [t for t in p.asked(nk("b")) if t > 4.0] == pytest.approx([5.0, 6.0, 7.0])
    # a, healthy throughout: one probe a round, one interval apart; never in a lane
    assert p.asked(nk("a"), fast=True) == []
    assert gaps(p.asked(nk("a"))) == [1.0] * 7


def test_detection_latency_at_the_defaults_is_about_one_interval_plus_one_second() -> None:
    """The failure starts at every phase of the round: failed 1 s + (0, 1] s later (was 2 s + ...)."""
    latencies = []
    for i in range(20):
        start = 2.0 + i * 0.05
        trace = sweep({"x": bad_between(start)}, seconds=6.0)
        failed = trace.failed_at(nk("x"))
        assert failed is not None
        latencies.append(failed - start)
    assert max(latencies) <= 2.0 + LATENCY + 1e-6
    assert min(latencies) >= 1.0


def test_one_probe_blips_never_fail_a_target() -> None:
    """Bad for a moment, caught by one probe: one re-probe half a second later finds it healthy."""
    blips = [(1.99, 2.01), (4.99, 5.01), (6.99, 7.01), (12.99, 13.01)]

    def script(t: float) -> str:
        return "503" if any(a <= t < b for a, b in blips) else "ok"

    trace = sweep({"x": script}, seconds=15.0)
    assert trace.failed_at(nk("x")) is None
    states = [s for _, _, s in trace.changes]
    assert states == [H, U, H, U, H, U, H, U, H]
    assert trace.prober.asked(nk("x"), fast=True) == pytest.approx([2.5, 5.5, 7.5, 13.5])


def test_hanging_suspect_is_reprobed_as_soon_as_its_probe_times_out() -> None:
    trace = sweep({"x": bad_between(2.5, how="hang"), "a": bad_between(99)}, seconds=8.0)
    p = trace.prober
    # round 3.0 times out at 3.8; re-probes at 3.8 (due 3.5) and 4.6; failed at 5.4
    assert p.asked(nk("x"), fast=True) == pytest.approx([3.8, 4.6])
    assert trace.failed_at(nk("x")) == pytest.approx(5.4)
    # failed between two rounds: the next round starts at once, so the decision on x is made on a
    # fresh result of every other target; then rounds go on one interval apart from there
    assert p.asked(nk("a")) == pytest.approx([0, 1, 2, 3, 4, 5, 5.4, 6.4, 7.4])
    assert p.asked(nk("x"), fast=False) == pytest.approx([0, 1, 2, 3, 5.4, 6.4, 7.4])


def test_fast_reprobes_never_delay_the_probes_of_the_others() -> None:
    """Four suspects hanging in their lanes while the regular lane has ONE slot: the healthy target
    is still probed on time every round and never waits for a slot (lanes have their own)."""
    def fail_then_hang(t: float) -> str:
        return "ok" if t < 1.5 else "503" if t < 2.2 else "hang"

    scripts: dict[str, Script] = {f"h{i}": fail_then_hang for i in range(4)}
    scripts["ok"] = bad_between(99)
    trace = sweep(scripts, seconds=4.05, concurrency=1, fast_concurrency=4)
    p = trace.prober
    for i in range(4):  # 503 at the round at 2.0, then hanging re-probes at 2.5 and 3.3: failed
        assert p.asked(nk(f"h{i}"), fast=True) == pytest.approx([2.5, 3.3])
        assert trace.failed_at(nk(f"h{i}")) == pytest.approx(4.1)
    ok = [r for r in p.results if r.key == nk("ok")]
    assert [r.asked_at for r in ok] == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    # at 3.0 and 4.0 four lane probes hang; the round's probe of ok starts when asked for
    assert all(r.at - r.latency_s == pytest.approx(r.asked_at) for r in ok[3:])
    assert all(r.latency_s == pytest.approx(LATENCY) for r in ok[3:])


def test_a_burst_of_hanging_suspects_does_not_slow_the_confirmation_of_others() -> None:
    """Forty targets start hanging at once (each lane probe holds its slot for the whole timeout):
    at the default slot counts a target answering 503 is still failed 1 s after its first failing
    probe, and the hanging ones at their own pace (timeout after timeout)."""
    scripts: dict[str, Script] = {f"h{i:02}": bad_between(1.5, how="hang") for i in range(40)}
    scripts["bad"] = bad_between(1.5)
    trace = sweep(scripts, seconds=6.0)
    assert trace.failed_at(nk("bad")) == pytest.approx(3.0 + LATENCY)
    assert [trace.failed_at(nk(f"h{i:02}")) for i in range(40)] == [pytest.approx(4.4)] * 40


def test_lane_stops_when_the_target_leaves_or_is_judged_afresh() -> None:
    async def main() -> list[Probe]:
        t0 = asyncio.get_running_loop().time()
        scripts: dict[TargetKey, Script] = {nk("x"): bad_between(0), nk("y"): bad_between(0)}
        prober = ScriptedProber(scripts, t0)
        async with prober:
            detector = Detector(DEFAULTS)
            sweeper = Sweeper(prober, detector, DEFAULTS)
            await sweeper.round([node("x"), node("y")])
            assert sweeper.in_lanes == {nk("x"), nk("y")}
            await sweeper.round([node("y")])  # x left the topology
            detector.reset(nk("y"))  # y was moved: judged afresh
            await asyncio.sleep(1.0)
            assert sweeper.in_lanes == frozenset()
            await sweeper.close()
            return prober.log
    log = run(main())
    assert [p for p in log if p.fast] == []


def test_flapping_target_still_gets_at_most_one_remediation_per_cooldown(topology: Topology) -> None:
    """web2 fails for 2.5 s every 6 s: the fast lane confirms each failure, the planner's cooldown
    still allows one remediation per cooldown."""
    s = WatchdogSettings(cooldown_s=20.0, remediations_per_hour=100)
    t = topology.with_(watchdog=s)
    items = targets(t)
    history = History()
    starts: list[float] = []

    def script(k: TargetKey) -> Script:
        if k != nk("web2"):
            return bad_between(1e9)
        return lambda x: "503" if x % 6.0 >= 3.5 else "ok"

    async def main() -> Trace:
        nonlocal history
        t0 = asyncio.get_running_loop().time()
        prober = ScriptedProber({i.key: script(i.key) for i in items}, t0)
        async with prober:
            trace = Trace(prober, Detector(s))
            sweeper = Sweeper(prober, trace.detector, s,
                              on_change=lambda k, h: trace.changes.append((prober.clock() - t0, k, h.state)))
            while prober.clock() - t0 < 90.0:
                started = prober.clock()
                await sweeper.round(items)
                now = prober.clock() - t0
                p = plan(t, classify(t, trace.detector.health), history, now)
                if p.action in (Action.FAILOVER, Action.REPLACE):
                    starts.append(now)
                    history = History((*history.remediations,
                                       Remediation(now, p.action, nodes=p.replace)))
                await sweeper.pause(started)
            await sweeper.close()
            return trace

    trace = run(main())
    failures = [x for x, k, st_ in trace.changes if k == nk("web2") and st_ is F]
    assert len(failures) >= 10  # every bad spell was confirmed...
    assert 3 <= len(starts) < len(failures)  # ...but the cooldown held most of them back
    assert all(b - a >= s.cooldown_s for a, b in itertools.pairwise(starts))


# ---- classify with targets failing at their own pace ------------------------------------------

def _h(state: State, ok: bool) -> Health:
    return Health(state=state, failures=0 if ok else 3, last_ok=ok)


def test_node_failed_while_its_host_is_only_failing_waits_for_the_host(topology: Topology) -> None:
    """The nodes refuse at once and are failed; the host's probes hang and lag: a host failure in
    the making, never an in-place replacement of its nodes."""
    health = {hk(h): _h(H, True) for h in topology.live_hosts}
    health |= {nk(n): _h(H, True) for n in topology.nodes}
    health |= {hk("kvm1"): _h(U, False), nk("db1"): _h(F, False), nk("web1"): _h(F, False)}
    f = classify(topology, health)
    assert f.empty and f.notes == ()
    health[hk("kvm1")] = _h(F, False)
    assert classify(topology, health).hosts == ("kvm1",)
    health[hk("kvm1")] = _h(H, True)  # the host answers: a node failure after all
    assert classify(topology, health).nodes == ("db1", "web1")


def test_host_failed_and_its_nodes_failing_at_different_paces_is_no_false_note(
        topology: Topology) -> None:
    health = {hk(h): _h(H, True) for h in topology.live_hosts}
    health |= {nk(n): _h(H, True) for n in topology.nodes}
    health |= {hk("kvm1"): _h(F, False), nk("db1"): _h(F, False), nk("web1"): _h(U, False)}
    f = classify(topology, health)
    assert f.empty and f.notes == ()


# ---- the setting ------------------------------------------------------------------------------

def _with_watchdog(topology: Topology, **raw: object) -> dict[str, object]:
    config = to_config(topology)
    config["watchdog"] = raw
    return config


@pytest.mark.parametrize("raw", [{"suspectInterval": 0}, {"suspectInterval": 1.5},
                                 {"interval": 0.2, "suspectInterval": 0.5}])
def test_suspect_interval_must_be_positive_and_at_most_the_interval(
        topology: Topology, raw: dict[str, float]) -> None:
    with pytest.raises(TopologyError) as err:
        parse_topology(_with_watchdog(topology, **raw))
    assert "mac:watchdog.suspectInterval" in str(err.value)
    assert "must be > 0 and <= mac:watchdog.interval" in str(err.value)


def test_suspect_interval_accepted_and_round_tripped(topology: Topology) -> None:
    t = parse_topology(_with_watchdog(topology, interval=2, suspectInterval=0.25))
    assert (t.watchdog.interval_s, t.watchdog.suspect_interval_s) == (2.0, 0.25)
    assert parse_topology(to_config(t)) == t
    # equal to the interval is allowed; left out under a short interval, the default yields to it
    assert parse_topology(_with_watchdog(topology, interval=0.5, suspectInterval=0.5))
    short = parse_topology(_with_watchdog(topology, interval=0.05)).watchdog
    assert reprobe_interval(short) == 0.05
