"""Prometheus metrics of the watchdog: what it probes, what it decides, what its remediations cost.

One `Metrics` per watchdog, on its own registry (never the process-global one, so tests and two
watchdogs in one process do not mix). `serve()` exposes it over HTTP, on 127.0.0.1 unless told
otherwise. Alert rules on these names: deploy/prometheus/mac-watchdog.rules.yml.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from watchdog.events import Event, EventKind

log = logging.getLogger(__name__)

DEFAULT_METRICS_ADDRESS = "127.0.0.1"
DEFAULT_METRICS_PORT = 9648
HEALTH_STATES = ("unknown", "healthy", "suspect", "failed")  # watchdog.detect.State
# Probes answer in ms; a timeout is the probe timeout (default 1 s).
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FENCE_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
UP_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    """Every metric the watchdog exports; the methods say what happened in domain words."""

    def __init__(self, stack: str, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.stack = stack
        self._clock = clock
        r = self.registry
        self.info = Info("mac_watchdog", "The watched stack.", registry=r)
        self.info.info({"stack": stack})
        self.probe_up = Gauge("mac_watchdog_probe_up", "1 if the last probe of the target answered healthy.",
                              ["kind", "target"], registry=r)
        self.probe_latency = Histogram("mac_watchdog_probe_latency_seconds", "Probe round-trip time.",
                                       ["kind", "target"], buckets=PROBE_BUCKETS, registry=r)
        self.probes = Counter("mac_watchdog_probes_total", "Probes sent, by result.",
                              ["kind", "target", "result"], registry=r)
        self.target_state = Gauge("mac_watchdog_target_state",
                                  "1 for the target's current health state (unknown/healthy/suspect/failed).",
                                  ["kind", "target", "state"], registry=r)
        self.detections = Counter("mac_watchdog_detections_total",
                                  "Failures detected (after the thresholds), by kind and target.",
                                  ["kind", "target"], registry=r)
        self.decisions = Counter("mac_watchdog_decisions_total", "Plans decided, by action and reason code.",
                                 ["action", "reason"], registry=r)
        self.refusing = Gauge("mac_watchdog_refusing",
                              "1 while the latest decision on a failure is a refusal, by reason code.",
                              ["reason"], registry=r)
        self.remediations = Counter("mac_watchdog_remediations_total",
                                    "Remediations finished, by outcome (succeeded, failed, abandoned) "
                                    "and reason code.", ["outcome", "reason"], registry=r)
        self.remediation_pending = Gauge("mac_watchdog_remediation_pending",
                                         "1 while a remediation is open in the journal.", registry=r)
        self.fence_seconds = Histogram("mac_watchdog_fence_duration_seconds", "Time to fence a host.",
                                       ["host", "result"], buckets=FENCE_BUCKETS, registry=r)
        self.up_seconds = Histogram("mac_watchdog_up_duration_seconds", "Time of one `pulumi up`.",
                                    ["result"], buckets=UP_BUCKETS, registry=r)
        self.last_deploy = Gauge("mac_watchdog_last_successful_deploy_timestamp_seconds",
                                 "When the watchdog's last `pulumi up` succeeded (Unix time).", registry=r)
        self.spare_hosts = Gauge("mac_watchdog_spare_hosts", "Spare hosts left in the stack file.",
                                 registry=r)
        self.failed_hosts = Gauge("mac_watchdog_failed_hosts", "Hosts taken out of service.", registry=r)
        self.last_round = Gauge("mac_watchdog_last_round_timestamp_seconds",
                                "When the loop last finished a probe round (Unix time).", registry=r)
        self.rounds = Counter("mac_watchdog_rounds_total", "Probe rounds the loop finished.", registry=r)
        self.alerts = Counter("mac_watchdog_alerts_total", "Alerts raised, by event and reason code.",
                              ["event", "reason"], registry=r)
        self._targets: set[tuple[str, str]] = set()

    # --- probing and health -----------------------------------------------------------------

    def probed(self, kind: str, target: str, ok: bool, latency_s: float) -> None:
        self._targets.add((kind, target))
        self.probe_up.labels(kind, target).set(1 if ok else 0)
        self.probe_latency.labels(kind, target).observe(latency_s)
        self.probes.labels(kind, target, "ok" if ok else "failed").inc()

    def health(self, kind: str, target: str, state: str) -> None:
        self._targets.add((kind, target))
        for s in HEALTH_STATES:
            self.target_state.labels(kind, target, s).set(1 if s == state else 0)

    def detected(self, kind: str, target: str) -> None:
        self.detections.labels(kind, target).inc()

    def round_done(self) -> None:
        self.rounds.inc()
        self.last_round.set(self._clock())

    def forget_targets(self, keep: Iterable[tuple[str, str]]) -> None:
        """Drop the series of (kind, target)s no longer in the topology (a host taken out)."""
        for kind, target in self._targets - set(keep):
            self._targets.discard((kind, target))
            with contextlib.suppress(KeyError):
                self.probe_up.remove(kind, target)
                self.probe_latency.remove(kind, target)
            for result in ("ok", "failed"):
                with contextlib.suppress(KeyError):
                    self.probes.remove(kind, target, result)
            for state in HEALTH_STATES:
                with contextlib.suppress(KeyError):
                    self.target_state.remove(kind, target, state)

    # --- decisions and remediations ---------------------------------------------------------

    def decided(self, action: str, reason: str) -> None:
        self.decisions.labels(action, reason).inc()
        self.refusing.clear()
        if action == "refuse":
            self.refusing.labels(reason).set(1)

    def all_clear(self) -> None:
        """No failure detected any more: nothing is being refused."""
        self.refusing.clear()

    def remediation_finished(self, outcome: str, reason: str) -> None:
        self.remediations.labels(outcome, reason).inc()

    def pending(self, open_: bool) -> None:
        self.remediation_pending.set(1 if open_ else 0)

    def fenced(self, host: str, ok: bool, seconds: float) -> None:
        self.fence_seconds.labels(host, "ok" if ok else "failed").observe(seconds)

    def deployed(self, ok: bool, seconds: float) -> None:
        self.up_seconds.labels("ok" if ok else "failed").observe(seconds)
        if ok:
            self.last_deploy.set(self._clock())

    def topology(self, spares: int, failed_hosts: int) -> None:
        self.spare_hosts.set(spares)
        self.failed_hosts.set(failed_hosts)


def _split(target: str) -> tuple[str, str]:
    kind, _, name = target.partition(":")  # watchdog.target.TargetKey prints as `node:db1`
    return kind, name


class MetricsSink:
    """An event sink (watchdog.events) that turns what the watchdog reports into `metrics`.

    A remediation's outcome: `succeeded` when it finished, `failed` for every failed attempt (a
    step that failed: the remediation stays open and is resumed) and for a failed verification,
    `abandoned` when the watchdog gave up on it; its reason is the plan's reason code.
    """

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.metrics = metrics
        self._clock = clock
        self._codes: dict[str, str] = {}  # remediation id -> its plan's reason code
        self._started: dict[tuple[str, str], float] = {}  # (remediation, step) -> clock
        self._fence: dict[str, list[str]] = {}  # remediation id -> the hosts its plan fences

    def __call__(self, event: Event) -> None:
        m, data = self.metrics, event.data
        if event.kind is EventKind.PROBED:
            m.probed(*_split(str(data["target"])), bool(data["ok"]), float(data["latency_s"]))
        elif event.kind is EventKind.HEALTH:
            kind, name = _split(str(data["target"]))
            m.health(kind, name, str(data["state"]))
            if data["state"] == "failed":
                m.detected(kind, name)
        elif event.kind is EventKind.DECIDED:
            m.decided(str(data["action"]), str(data["code"]))
        elif event.kind is EventKind.ROUND:
            m.round_done()
            m.topology(int(data["spares"]), int(data["failed_hosts"]))
            if data["refusing"] is None:
                m.all_clear()
            else:
                m.refusing.clear()
                m.refusing.labels(str(data["refusing"])).set(1)
        elif event.kind is EventKind.ALERT:
            m.alerts.labels(str(data.get("event", "")), str(data.get("reason", ""))).inc()
        elif event.kind is EventKind.JOURNALED:
            self._journaled(data)

    def _journaled(self, entry: Mapping[str, Any]) -> None:
        m, rid, what = self.metrics, str(entry.get("id", "")), entry.get("event")
        if what == "planned":
            plan = entry.get("plan", {})
            self._codes[rid] = str(plan.get("code", "unknown"))
            self._fence[rid] = [str(h) for h in plan.get("fence", ())]
            m.pending(True)
        elif what == "step":
            key, status = (rid, str(entry.get("step"))), entry.get("status")
            if status == "started":
                self._started[key] = self._clock()
                return
            ok = status == "done"
            began = self._started.pop(key, None)
            if began is not None:
                seconds = self._clock() - began
                if key[1] == "fence":
                    for host in self._fence.get(rid) or ["unknown"]:
                        m.fenced(str(host), ok, seconds)
                elif key[1] == "up":
                    m.deployed(ok, seconds)
            if not ok:
                m.remediation_finished("failed", self._codes.get(rid, "unknown"))
        elif what == "finished":
            outcome = str(entry.get("outcome"))
            label = {"ok": "succeeded", "abandoned": "abandoned"}.get(outcome, "failed")
            if outcome != "verify_failed":  # its failed step was counted already
                m.remediation_finished(label, self._codes.pop(rid, "unknown"))
            m.pending(False)


@dataclass
class MetricsServer:
    """The HTTP endpoint; `close()` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(metrics: Metrics, address: str = DEFAULT_METRICS_ADDRESS,
          port: int = DEFAULT_METRICS_PORT) -> MetricsServer | None:
    """Serve /metrics; None (logged) when the port is taken: metrics never stop the watchdog."""
    try:
        server, thread = start_http_server(port, addr=address, registry=metrics.registry)
    except OSError as err:
        log.error("metrics: cannot listen on %s:%d (%s); running without metrics", address, port, err)
        return None
    log.info("metrics on http://%s:%d/metrics", address, server.server_port)
    return MetricsServer(server, thread)
