"""The watchdog as a service, for real: `mac-watchdog run` in a child process talks systemd's
notify protocol to a real unix datagram socket, and a real Prometheus scrapes its metrics on
loopback and evaluates the shipped alert rules."""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.netutil import free_port
from tests.ops.prometheus import Prometheus
from tests.ops.watchdog_process import NO_SPARE_STACK, WatchdogProcess, project
from tests.watchdog.seams import redirect
from watchdog.context import Context
from watchdog.events import Event, EventKind, fan_out
from watchdog.sdnotify import LoopNotifier, Notifier
from watchdog.watch import Watchdog


class NotifySocket:
    """The service manager's end of $NOTIFY_SOCKET; every datagram with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[tuple[float, dict[str, str]]] = []

    def collect(self, until: float, stop: str | None = None) -> None:
        while time.monotonic() < until:
            self.sock.settimeout(max(0.01, until - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.splitlines())
            self.received.append((time.monotonic(), fields))
            if stop is not None and stop in fields:
                return

    def with_key(self, key: str) -> list[tuple[float, dict[str, str]]]:
        return [(t, f) for t, f in self.received if key in f]


@pytest.fixture
def notify_socket(tmp_path: Path):
    s = NotifySocket(tmp_path / "notify.sock")
    yield s
    s.sock.close()


def test_run_says_ready_pings_and_says_stopping(tmp_path: Path, notify_socket: NotifySocket) -> None:
    root = project(tmp_path / "p")
    wd = WatchdogProcess(root, "--metrics-port", "0",
                         env={"NOTIFY_SOCKET": str(notify_socket.path), "WATCHDOG_USEC": "1000000"})
    try:
        notify_socket.collect(time.monotonic() + 30, stop="READY")
        [(_, ready)] = notify_socket.with_key("READY")
        assert ready["READY"] == "1" and ready["STATUS"].startswith("watching stack test")
        notify_socket.collect(time.monotonic() + 2.2)
        pings = [t for t, _ in notify_socket.with_key("WATCHDOG")]
        assert len(pings) >= 3  # WatchdogSec 1 s: a ping every 0.5 s at most
        assert all(b - a >= 0.45 for a, b in itertools.pairwise(pings))
        statuses = [f["STATUS"] for _, f in notify_socket.received if "STATUS" in f]
        assert "watching stack test; refusing (isolation_suspected)" in statuses  # all down: refused
        code, stderr = wd.interrupt()
    finally:
        wd.kill()
    notify_socket.collect(time.monotonic() + 2, stop="STOPPING")
    assert notify_socket.with_key("STOPPING")
    assert code == 130
    assert stderr.rstrip().endswith("error: interrupted")  # a dry run leaves nothing unfinished
    assert "resumes" not in stderr


def test_a_hung_loop_is_not_pinged(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """A listener that blocks the event loop for 2.5 s (as a hung loop would): no ping meanwhile."""
    root = project(tmp_path / "p")
    notifier = LoopNotifier(Notifier(str(notify_socket.path), watchdog_s=0.4), "test")

    def hang(event: Event) -> None:
        if event.kind is EventKind.ROUND and event.data["round"] == 10:
            time.sleep(2.5)

    ctx = Context(project_dir=root, stack="test", state_dir=root / "state",
                  transport=redirect(free_port()), events=fan_out(hang, notifier))
    started = time.monotonic()
    collector = threading.Thread(target=notify_socket.collect, args=(started + 30, "STOPPING"))
    collector.start()
    asyncio.run(Watchdog(ctx, dry_run=True).run(max_rounds=60))
    notifier.stopping()
    collector.join()
    pings = [t - started for t, _ in notify_socket.with_key("WATCHDOG")]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) >= 2.5  # the hang
    assert sorted(gaps)[-2] < 1.0  # otherwise a ping every round, at most every 0.2 s


def test_prometheus_scrapes_a_running_watchdog_and_fires_the_rules(tmp_path: Path) -> None:
    root = project(tmp_path / "p", NO_SPARE_STACK)
    port = free_port()
    wd = WatchdogProcess(root, "--metrics-port", str(port))
    prom = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{port}"])
    try:
        wanted = {"MacWatchdogRefusing", "MacNoSpareLeft"}
        firing = prom.wait_for(lambda: (f := prom.firing()).keys() >= wanted and f, 60, " and ".join(wanted))
        assert firing["MacWatchdogRefusing"]["reason"] == "isolation_suspected"
        assert "MacWatchdogDown" not in firing
        up = prom.query('mac_watchdog_probe_up{job="mac-watchdog"}')
        assert {r["metric"]["target"] for r in up} >= {"kvm1", "kvm2", "kvm3", "db1", "web1", "lb1"}
        assert all(r["value"][1] == "0" for r in up)  # every probe goes to a dead port
        assert prom.query('mac_watchdog_target_state{target="db1", state="failed"}')[0]["value"][1] == "1"
        assert prom.query("mac_watchdog_decisions_total")[0]["metric"]["reason"] == "isolation_suspected"
        assert prom.query("mac_watchdog_probe_latency_seconds_count")
        code, _ = wd.interrupt()
        assert code == 130
        firing = prom.wait_for(lambda: "MacWatchdogDown" in (f := prom.firing()) and f, 60, "MacWatchdogDown")
        assert firing["MacWatchdogDown"]["instance"] == f"127.0.0.1:{port}"
    finally:
        wd.kill()
        prom.close()
