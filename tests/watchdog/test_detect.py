"""The detector with an injected clock: thresholds, hysteresis, classification."""

from __future__ import annotations

from collections.abc import Set

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.topology import Topology, WatchdogSettings
from watchdog.detect import SPAN_SLACK_S, Detector, Health, State, classify, step
from watchdog.reasons import Reason
from watchdog.target import ProbeResult, TargetKey

nk, hk = TargetKey.node, TargetKey.host
S = WatchdogSettings(interval_s=1.0, fail_threshold=3, fail_after_s=2.0, recover_threshold=3,
                     max_unhealthy_share=0.5)


def run(pattern: str, settings_: WatchdogSettings = S, interval: float = 1.0) -> list[State]:
    """Feed probe outcomes ('.' ok, 'x' failed) one interval apart; the state after each."""
    h, states = Health(), []
    for i, c in enumerate(pattern):
        h = step(h, c == ".", i * interval, settings_)
        states.append(h.state)
    return states


H, U, F = State.HEALTHY, State.SUSPECT, State.FAILED


@pytest.mark.parametrize(("pattern", "expected"), [
    ("...", [H, H, H]),
    ("xxx", [U, U, F]),  # 3 failures spanning 2 s
    ("xx.xx", [U, U, H, U, U]),  # a success resets the count
    ("xxxx", [U, U, F, F]),
    ("xxx..", [U, U, F, F, F]),  # recovery needs 3 successes
    ("xxx...", [U, U, F, F, F, H]),
    ("xxx..x...", [U, U, F, F, F, F, F, F, H]),
])
def test_step_table(pattern: str, expected: list[State]) -> None:
    assert run(pattern) == expected


def test_failure_needs_the_time_span_too() -> None:
    # 5 failures 0.1 s apart: the count is reached at once, the 2 s span never.
    assert run("xxxxx", interval=0.1)[-1] is U
    assert run("x" * 21, interval=0.1)[-1] is F  # 2.0 s after the first failure


def test_span_runs_from_the_first_probe_start_to_the_last_probe_end() -> None:
    """Probes started 1 s apart, answering in 2 ms: failed at the third, not a fourth interval later."""
    h = Health()
    for start in (10.0, 11.0, 11.999):  # the last timer fired a millisecond early
        h = step(h, False, start + 0.002, S, "HTTP 503", latency_s=0.002)
    assert h.state is F and h.first_failure_at == 10.0


def test_span_counts_from_when_the_probe_was_asked_for() -> None:
    """A first probe that waited 0.7 s for a concurrency slot still started the clock on time."""
    d = Detector(S)
    d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 10.71, asked_at=10.0)])
    d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 11.01, asked_at=11.0)])
    d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 12.01, asked_at=12.0)])
    assert d.health[nk("a")].state is F


def test_detector_reports_changes_and_keeps_errors() -> None:
    d = Detector(S)
    changed = d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 0.0)])
    assert changed == [nk("a")]
    assert d.health[nk("a")].last_error == "HTTP 503"
    assert d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 1.0)]) == []
    assert d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 2.0)]) == [nk("a")]
    assert d.health[nk("a")].state is F


def _health(topology: Topology, failed: Set[TargetKey],
            failing: Set[TargetKey] = frozenset()) -> dict[TargetKey, Health]:
    out = {}
    keys = [hk(h) for h in topology.live_hosts] + [nk(n) for n in topology.nodes]
    for k in keys:
        if k in failed:
            out[k] = Health(state=F, failures=3, last_ok=False)
        elif k in failing:
            out[k] = Health(state=U, failures=1, last_ok=False)
        else:
            out[k] = Health(state=H, last_ok=True)
    return out


def test_classify_host_failure(topology: Topology) -> None:
    f = classify(topology, _health(topology, {hk("kvm1"), nk("db1"), nk("web1")}))
    assert (f.hosts, f.nodes, f.isolated) == (("kvm1",), (), False)


def test_classify_node_failure_on_reachable_host(topology: Topology) -> None:
    f = classify(topology, _health(topology, {nk("web2")}))
    assert (f.hosts, f.nodes) == ((), ("web2",))


def test_classify_host_unreachable_but_nodes_answer_is_not_acted_on(topology: Topology) -> None:
    f = classify(topology, _health(topology, {hk("kvm1"), nk("db1")}))
    assert f.empty
    assert [(n.code, n.about) for n in f.notes] == [(Reason.MANAGEMENT_NETWORK_SUSPECTED, ("kvm1",)),
                                                    (Reason.NODE_ON_UNREACHABLE_HOST, ("db1",))]
    assert "web1 still answer" in f.notes[0].message


def test_classify_waits_while_the_nodes_of_a_dead_host_are_only_failing(topology: Topology) -> None:
    f = classify(topology, _health(topology, {hk("kvm1")}, {nk("db1"), nk("web1")}))
    assert f.empty and f.notes == ()


def test_classify_failed_spare_is_a_host_failure(topology: Topology) -> None:
    assert classify(topology, _health(topology, {hk("spare1")})).hosts == ("spare1",)


def test_classify_isolation_when_more_than_the_share_fails(topology: Topology) -> None:
    # 9 targets, share 0.5: 5 failing (confirmed or just failing) means "our network".
    health = _health(topology, {hk("kvm1"), nk("db1"), nk("web1")}, {hk("kvm2"), nk("db2")})
    f = classify(topology, health)
    assert f.isolated and not f.hosts and not f.nodes
    assert f.notes[0].code is Reason.ISOLATION_SUSPECTED and "acting on nothing" in f.notes[0].message
    # 4 of 9 is not isolation
    health = _health(topology, {hk("kvm1"), nk("db1"), nk("web1")}, {nk("db2")})
    assert not classify(topology, health).isolated


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.integers(1, 5), st.integers(1, 5),
       st.floats(0, 5))
def test_property_failed_only_after_n_failures_spanning_t(outcomes: list[bool], n: int, m: int,
                                                          t: float) -> None:
    s = WatchdogSettings(fail_threshold=n, recover_threshold=m, fail_after_s=t)
    h = Health()
    run_start: float | None = None
    for i, ok in enumerate(outcomes):
        before = h.state
        h = step(h, ok, float(i), s)
        run_start = None if ok else (run_start if run_start is not None else float(i))
        if h.state is F and before is not F:
            assert not ok and h.failures >= n and i - (run_start or 0) >= t - SPAN_SLACK_S
        if before is F and h.state is H:
            assert h.successes >= m


def test_the_pure_core_loads_no_io_client() -> None:
    """detect and plan read targets and results without loading httpx or the HTTP client."""
    import subprocess
    import sys
    code = ("import sys, watchdog.detect, watchdog.plan; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'ruamel', 'pulumi')"
            " or m in ('watchdog.probe', 'watchdog.http1')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_detector_reset_and_forget() -> None:
    d = Detector(S)
    d.observe([ProbeResult(nk("a"), False, 0.01, "HTTP 503", 0.0),
               ProbeResult(hk("h"), True, 0.01, None, 0.0)])
    d.reset(nk("a"))
    assert d.health[nk("a")] == Health()
    d.forget([nk("a")])
    assert set(d.health) == {hk("h")}
    assert str(hk("h")) == "host:h"
