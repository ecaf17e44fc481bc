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
    assert found[TargetKey(Kind.VIP, "vip")].address == f"http://{VIP}:8404/healthz"
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
