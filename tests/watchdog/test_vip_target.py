"""The LB pair's VIP is a probe target of its own: watched and reported, never acted on."""

from __future__ import annotations

from components.topology import parse_topology
from tests.unit.test_lb_pair import VIP, pair_raw
from tests.unit.test_topology import seed
from watchdog.detect import Detector, classify
from watchdog.target import Kind, ProbeResult, TargetKey, targets


def test_the_vip_is_probed_beside_each_lb() -> None:
    t = parse_topology(pair_raw())
    found = {t_.key: t_ for t_ in targets(t)}
    assert found[TargetKey(Kind.VIP, "vip")].address == f"http://{VIP}:8404/node"
    assert TargetKey.node("lb1") in found and TargetKey.node("lb2") in found
    assert not any(k.kind is Kind.VIP for k in (x.key for x in targets(parse_topology(seed()))))


def test_a_failed_vip_alone_is_no_failure_to_remediate() -> None:
    t = parse_topology(pair_raw())
    detector = Detector(t.watchdog)
    key = TargetKey(Kind.VIP, "vip")
    for i in range(10):
        detector.observe([ProbeResult(key, False, 0.01, "timeout", float(i))])
    assert detector.health[key].state.value == "failed"
    assert str(key) == "vip:vip"
    failures = classify(t, detector.health)
    assert failures.empty and failures.total == 0


def test_a_failing_vip_neither_tips_the_isolation_guard_nor_holds_a_decision() -> None:
    """The master LB's host dies: its VIP is failing until keepalived moves it (~0.35 s). The
    decision about the LB node counts nodes and hosts only and waits for nothing on the VIP."""
    from dataclasses import replace

    from watchdog.detect import Health, State

    t = parse_topology(pair_raw())
    now = 100.0
    health = {TargetKey.host(h): Health(state=State.HEALTHY, last_ok=True) for h in t.live_hosts}
    health |= {TargetKey.node(n): Health(state=State.HEALTHY, last_ok=True) for n in t.nodes}
    health[TargetKey.node("lb1")] = Health(state=State.FAILED, failures=3, last_ok=False,
                                           changed_at=now - 0.1)
    vip = TargetKey(Kind.VIP, "vip")
    health[vip] = Health(state=State.SUSPECT, failures=1, last_ok=False, changed_at=now)
    f = classify(t, health, t.watchdog, now)
    assert f.nodes == ("lb1",) and f.waiting == ()
    assert f.total == len(t.live_hosts) + len(t.nodes) and f.failing == 1
    health[vip] = replace(health[vip], state=State.FAILED)
    assert classify(t, health, t.watchdog, now).nodes == ("lb1",)
