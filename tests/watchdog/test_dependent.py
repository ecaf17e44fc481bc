"""Health that says what failed: a node that works while a dependency is down is never failed for
it; a host cut off from the watchdog only is not a dead host; a fault still unfolding is waited for,
so one plan covers it. Pure: the detector, classify and plan with an injected clock."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import replace

import pytest

from components.roles.mysql import EVS_OPTIONS
from components.topology import Topology, WatchdogSettings
from watchdog.detect import (
    DEGRADED_NOTE_AFTER_S,
    PEER_VIEW_LAG_S,
    Health,
    State,
    classify,
    reprobe_interval,
    step,
)
from watchdog.plan import Action, plan
from watchdog.reasons import Reason
from watchdog.target import SelfReport, TargetKey

nk, hk = TargetKey.node, TargetKey.host
S = WatchdogSettings(interval_s=0.5, fail_threshold=3, fail_after_s=1.5, max_unhealthy_share=0.5)
NOW = 100.0


def health(topology: Topology, failed: Set[TargetKey] = frozenset(),
           failing: Set[TargetKey] = frozenset(), degraded: Mapping[str, str] | None = None,
           sees: Mapping[str, frozenset[str]] | None = None,
           failed_at: float = NOW - 0.1) -> dict[TargetKey, Health]:
    """Every target healthy unless named; `degraded` and `sees` by node name."""
    out = {}
    for key in [hk(h) for h in topology.live_hosts] + [nk(n) for n in topology.nodes]:
        if key in failed:
            out[key] = Health(state=State.FAILED, failures=3, last_ok=False, changed_at=failed_at)
        elif key in failing:
            out[key] = Health(state=State.SUSPECT, failures=1, last_ok=False, changed_at=NOW)
        else:
            reason = (degraded or {}).get(key.name)
            out[key] = Health(state=State.HEALTHY, last_ok=True, degraded=reason,
                              degraded_since=NOW - 1 if reason else None,
                              sees=(sees or {}).get(key.name, frozenset()))
    return out


def ip(topology: Topology, node: str) -> str:
    return topology.nodes[node].ip


def test_a_degraded_probe_is_a_good_probe_and_remembers_since_when() -> None:
    h = step(Health(), True, 1.0, S, degraded="no web server up")
    assert (h.state, h.degraded, h.degraded_since) == (State.HEALTHY, "no web server up", 1.0)
    h = step(h, True, 2.0, S, degraded="no web server up")
    assert h.degraded_since == 1.0
    h = step(h, False, 3.0, S, error="timeout", degraded="ignored")
    assert (h.state, h.degraded, h.degraded_since) == (State.SUSPECT, None, None)
    h = step(step(h, True, 4.0, S), True, 5.0, S, degraded="no DB server up")
    assert h.degraded_since == 5.0


def test_an_lb_without_web_servers_is_not_failed_with_them(topology: Topology) -> None:
    f = classify(topology, health(topology, {nk("web1"), nk("web2")},
                                  degraded={"lb1": "no web server up"}), S, NOW)
    assert (f.hosts, f.nodes, f.isolated) == ((), ("web1", "web2"), False)


def test_a_db_node_in_a_view_change_is_not_failed_with_its_dead_peer(topology: Topology) -> None:
    f = classify(topology, health(topology, {nk("db2")}, degraded={
        "db1": "not in a Primary component (wsrep_cluster_status=non-Primary)"}), S, NOW)
    assert f.nodes == ("db2",)


def test_dependent_failures_never_tip_the_isolation_guard(topology: Topology) -> None:
    """web1 dead, then kvm2 (db2, web2): 4 of 9 targets fail on their own; lb1 (no web server)
    and db1 (view change) answer, degraded: a failover, not "our own network"."""
    f = classify(topology, health(topology, {nk("web1"), hk("kvm2"), nk("db2"), nk("web2")},
                                  degraded={"lb1": "no web server up", "db1": "not Synced"}), S, NOW)
    assert not f.isolated and (f.hosts, f.nodes) == (("kvm2",), ("web1",))
    p = plan(topology, f, now=NOW)
    assert p.action is Action.FAILOVER and p.replace == ("web1",)
    assert {m.node for m in p.moves} == {"db2", "web2"} and "replace web1 in place" in p.reason
    assert set(p.verify) == {"db2", "web1", "web2"}


def test_a_lasting_degradation_is_noted_but_not_acted_on(topology: Topology) -> None:
    h = health(topology, degraded={"lb1": "no web server up"})
    assert classify(topology, h, S, NOW).notes == ()  # one second: only a health change
    later = NOW + DEGRADED_NOTE_AFTER_S
    [note] = classify(topology, h, S, later).notes
    assert (note.code, note.about) == (Reason.DEPENDENT_FAILURE, ("lb1",))
    assert "no web server up" in note.message and classify(topology, h, S, later).empty


def test_a_host_its_peers_still_see_is_waited_for_then_refused_as_partitioned(
        topology: Topology) -> None:
    dead = {hk("kvm1"), nk("db1"), nk("web1")}
    seen = health(topology, dead, sees={"lb1": frozenset({ip(topology, "web1")}),
                                        "db2": frozenset({ip(topology, "db1"), ip(topology, "db2")})})
    waiting = classify(topology, seen, S, NOW)
    assert waiting.empty and "lb1 sees web1" in waiting.waiting[0]
    cut_off = classify(topology, seen, S, NOW - 0.1 + PEER_VIEW_LAG_S)
    assert (cut_off.hosts, cut_off.nodes, cut_off.partitioned) == ((), (), ("kvm1",))
    p = plan(topology, cut_off, now=NOW)
    assert (p.action, p.code) == (Action.REFUSE, Reason.PARTITIONED)
    assert "db2 sees db1" in p.reason
    # Nobody sees them: a dead host, failed over at once.
    assert classify(topology, health(topology, dead), S, NOW).hosts == ("kvm1",)


def test_a_fault_still_unfolding_is_waited_for(topology: Topology) -> None:
    """web2 was killed a few milliseconds after web1 and is failing, not failed yet: deciding now
    would replace web1 alone and then plan again for both."""
    h = health(topology, {nk("web1")}, {nk("web2")})
    f = classify(topology, h, S, NOW)
    assert f.empty and f.waiting == ("node:web2 failing, not failed yet",)
    h[nk("web2")] = replace(h[nk("web1")], changed_at=NOW + 0.5)
    assert classify(topology, h, S, NOW + 0.5).nodes == ("web1", "web2")


def test_waiting_for_an_unfolding_fault_is_bounded(topology: Topology) -> None:
    h = health(topology, {nk("web1")}, {nk("web2")})  # web2 flaps: failing, never failed
    later = NOW - 0.1 + S.fail_after_s + reprobe_interval(S)
    assert classify(topology, h, S, later).nodes == ("web1",)
    assert classify(topology, h, S).nodes == ("web1",)  # no clock (one-shot commands): no wait


def test_peer_view_lag_covers_galera_eviction() -> None:
    def seconds(iso: str) -> float:
        return float(iso.removeprefix("PT").removesuffix("S"))

    assert (seconds(EVS_OPTIONS["evs.inactive_timeout"])
                               + seconds(EVS_OPTIONS["evs.install_timeout"])) == PEER_VIEW_LAG_S


@pytest.mark.parametrize(("body", "degraded", "sees"), [
    (b'{"degraded": null, "sees": {"10.0.0.1": true, "10.0.0.2": false}}', None, {"10.0.0.1"}),
    (b'{"degraded": "", "sees": {}}', None, set()),  # HAProxy's "nothing degraded"
    (b'{"degraded": "no web server up", "sees": {"10.0.0.1": 1}}', "no web server up", set()),
    (b"wsrep_local_state=4", None, set()),  # not JSON: the status alone decides
    (b"[1, 2]", None, set()),
])
def test_self_report_parsing(body: bytes, degraded: str | None, sees: set[str]) -> None:
    assert SelfReport.parse(body) == SelfReport(degraded, frozenset(sees))


@pytest.mark.parametrize("backend", ["native", "httpx"])
def test_the_prober_reads_the_self_report_over_real_http(backend: str) -> None:
    """A loopback server answering as an LB without web servers: the probe is good and carries
    the degraded dependency and what the node sees; a 503 carries nothing."""
    import asyncio
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from watchdog.probe import Prober
    from watchdog.target import Kind, Target

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = 200 if self.path == "/node" else 503
            body = json.dumps({"degraded": "no web server up", "sees": {"10.0.0.21": False,
                                                                         "10.0.0.11": True}})
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    async def go() -> list:
        async with Prober(2.0, backend=backend) as prober:  # type: ignore[arg-type]
            return [await prober.probe(Target(Kind.NODE, name, base + path, "lb"))
                    for name, path in (("lb1", "/node"), ("lb2", "/healthz"))]
    try:
        good, bad = asyncio.run(go())
    finally:
        server.shutdown()
        server.server_close()
    assert (good.ok, good.degraded, good.sees) == (True, "no web server up", {"10.0.0.11"})
    assert (bad.ok, bad.error, bad.degraded, bad.sees) == (False, "HTTP 503", None, frozenset())
