"""watchdog.metrics: the names and labels the alert rules and dashboards rely on, served over HTTP
on loopback and read back with Prometheus' own text parser."""

from __future__ import annotations

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from watchdog.events import Event, EventKind
from watchdog.metrics import DEFAULT_METRICS_ADDRESS, Metrics, MetricsSink, serve


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def test_default_address_is_loopback() -> None:
    assert DEFAULT_METRICS_ADDRESS == "127.0.0.1"


def test_served_metrics_say_what_happened() -> None:
    now = [1_700_000_000.0]
    m = Metrics("dev", clock=lambda: now[0])
    server = serve(m, port=0)
    assert server is not None
    try:
        m.probed("node", "web1", True, 0.004)
        m.probed("host", "kvm1", False, 1.0)
        m.health("host", "kvm1", "failed")
        m.detected("host", "kvm1")
        m.decided("refuse", "no-spare")
        m.fenced("kvm1", True, 2.0)
        m.deployed(True, 42.0)
        m.remediation_finished("succeeded", "host-failed")
        m.topology(spares=0, failed_hosts=1)
        m.round_done()
        got = scrape(server.port)
    finally:
        server.close()
    assert got["mac_watchdog_info"] == {(("stack", "dev"),): 1.0}
    assert got["mac_watchdog_probe_up"] == {(("kind", "host"), ("target", "kvm1")): 0.0,
                                            (("kind", "node"), ("target", "web1")): 1.0}
    assert got["mac_watchdog_probe_latency_seconds_count"][(("kind", "node"), ("target", "web1"))] == 1
    assert got["mac_watchdog_target_state"][(("kind", "host"), ("state", "failed"), ("target", "kvm1"))] == 1
    assert got["mac_watchdog_target_state"][(("kind", "host"), ("state", "healthy"), ("target", "kvm1"))] == 0
    assert got["mac_watchdog_detections_total"] == {(("kind", "host"), ("target", "kvm1")): 1.0}
    assert got["mac_watchdog_refusing"] == {(("reason", "no-spare"),): 1.0}
    assert got["mac_watchdog_remediations_total"] == {
        (("outcome", "succeeded"), ("reason", "host-failed")): 1}
    assert got["mac_watchdog_fence_duration_seconds_sum"] == {(("host", "kvm1"), ("result", "ok")): 2.0}
    assert got["mac_watchdog_up_duration_seconds_sum"] == {(("result", "ok"),): 42.0}
    assert got["mac_watchdog_last_successful_deploy_timestamp_seconds"] == {(): now[0]}
    assert got["mac_watchdog_spare_hosts"] == {(): 0.0}
    assert got["mac_watchdog_last_round_timestamp_seconds"] == {(): now[0]}


def test_a_decision_to_act_clears_refusing() -> None:
    m = Metrics("dev")
    m.decided("refuse", "cooldown")
    m.decided("failover", "host-failed")
    assert m.registry.get_sample_value("mac_watchdog_refusing", {"reason": "cooldown"}) is None
    m.decided("refuse", "budget")
    m.all_clear()
    assert m.registry.get_sample_value("mac_watchdog_refusing", {"reason": "budget"}) is None


def test_targets_that_left_the_topology_are_forgotten() -> None:
    m = Metrics("dev")
    m.probed("host", "kvm1", True, 0.01)
    m.health("host", "kvm1", "healthy")
    m.probed("host", "spare1", True, 0.01)
    m.forget_targets([("host", "spare1")])
    assert m.registry.get_sample_value("mac_watchdog_probe_up", {"kind": "host", "target": "kvm1"}) is None
    assert m.registry.get_sample_value("mac_watchdog_probe_up", {"kind": "host", "target": "spare1"}) == 1


def test_a_taken_port_means_no_metrics_not_no_watchdog() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert serve(Metrics("dev"), port=s.getsockname()[1]) is None


def _journaled(**entry: object) -> Event:
    return Event(EventKind.JOURNALED, entry)


def test_the_sink_times_fence_and_up_and_counts_outcomes() -> None:
    now = [0.0]
    m = Metrics("dev", clock=lambda: 1_700_000_000.0)
    sink = MetricsSink(m, clock=lambda: now[0])
    sink(_journaled(event="planned", id="r1", plan={"code": "host_failed", "fence": ["kvm1"]}))
    assert m.registry.get_sample_value("mac_watchdog_remediation_pending") == 1
    for step, took in (("fence", 2.0), ("up", 40.0)):
        sink(_journaled(event="step", id="r1", step=step, status="started"))
        now[0] += took
        sink(_journaled(event="step", id="r1", step=step, status="done"))
    sink(_journaled(event="step", id="r1", step="verify", status="started"))
    sink(_journaled(event="step", id="r1", step="verify", status="failed", error="web1 not healthy"))
    sink(_journaled(event="finished", id="r1", outcome="verify_failed"))
    sink(_journaled(event="planned", id="r2", plan={"code": "node_failed", "fence": []}))
    sink(_journaled(event="finished", id="r2", outcome="ok"))
    sink(_journaled(event="planned", id="r3", plan={"code": "host_failed", "fence": ["kvm2"]}))
    sink(_journaled(event="finished", id="r3", outcome="abandoned"))
    get = m.registry.get_sample_value
    assert get("mac_watchdog_fence_duration_seconds_sum", {"host": "kvm1", "result": "ok"}) == 2.0
    assert get("mac_watchdog_up_duration_seconds_sum", {"result": "ok"}) == 40.0
    assert get("mac_watchdog_last_successful_deploy_timestamp_seconds") == 1_700_000_000.0
    assert get("mac_watchdog_remediations_total", {"outcome": "failed", "reason": "host_failed"}) == 1
    assert get("mac_watchdog_remediations_total", {"outcome": "succeeded", "reason": "node_failed"}) == 1
    assert get("mac_watchdog_remediations_total", {"outcome": "abandoned", "reason": "host_failed"}) == 1
    assert get("mac_watchdog_remediation_pending") == 0


def test_the_sink_follows_health_decisions_rounds_and_alerts() -> None:
    m = Metrics("dev")
    sink = MetricsSink(m)
    sink(Event(EventKind.PROBED, {"target": "host:kvm1", "ok": False, "latency_s": 0.3, "error": "refused"}))
    sink(Event(EventKind.HEALTH, {"target": "host:kvm1", "state": "failed", "error": "refused"}))
    sink(Event(EventKind.DECIDED, {"action": "refuse", "code": "no_spare", "reason": "no spare"}))
    sink(Event(EventKind.ROUND, {"round": 1, "refusing": "no_spare", "remediating": False, "spares": 0,
                                 "failed_hosts": 1}))
    sink(Event(EventKind.ALERT, {"event": "refused", "reason": "no_spare"}))
    get = m.registry.get_sample_value
    assert get("mac_watchdog_probe_up", {"kind": "host", "target": "kvm1"}) == 0
    assert get("mac_watchdog_detections_total", {"kind": "host", "target": "kvm1"}) == 1
    assert get("mac_watchdog_refusing", {"reason": "no_spare"}) == 1
    assert get("mac_watchdog_spare_hosts") == 0 and get("mac_watchdog_failed_hosts") == 1
    assert get("mac_watchdog_alerts_total", {"event": "refused", "reason": "no_spare"}) == 1
    sink(Event(EventKind.ROUND, {"round": 2, "refusing": None, "remediating": False, "spares": 1,
                                 "failed_hosts": 1}))
    assert get("mac_watchdog_refusing", {"reason": "no_spare"}) is None
