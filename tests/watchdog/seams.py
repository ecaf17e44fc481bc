"""Test doubles that plug into the watchdog's public seams (no patching, no hidden switches):
a probe transport that sends every probe to the test servers' port, and event recorders."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any
from urllib.parse import urlsplit

from watchdog.events import Event, EventKind, EventSink
from watchdog.probe import Answer, NativeTransport, TransportFactory, tcp_connect
from watchdog.target import TargetKey


class PortRedirect(NativeTransport):
    """Every probe goes to `port` on the target's own IP, where the test servers listen."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    async def http_get(self, key: TargetKey, url: str) -> Answer:
        parts = urlsplit(url)
        return await super().http_get(key, parts._replace(netloc=f"{parts.hostname}:{self.port}").geturl())

    async def connect(self, address: str) -> None:
        # The test servers speak HTTP, not SSH: a plain connect stands for the banner here
        # (test_probe.py checks the banner itself against a real listener).
        host = address.rpartition(":")[0]
        await tcp_connect(f"{host}:{self.port}")


def redirect(port: int) -> TransportFactory:
    return lambda timeout_s, connections: PortRedirect(port)


class Recorder:
    """An event sink that keeps every event (thread-safe: the remediation worker emits too)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def alerts(self, event: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e.data) for e in self.events if e.kind is EventKind.ALERT
                    and (event is None or e.data["event"] == event)]


def kill_after(step: str, status: str) -> EventSink:
    """SIGKILL this process right after the journal records STEP:STATUS (a crash mid-remediation)."""
    def sink(event: Event) -> None:
        if event.kind is EventKind.JOURNALED and (event.data.get("step"), event.data.get("status")) \
                == (step, status):
            os.kill(os.getpid(), signal.SIGKILL)
    return sink


def cli_command(port: int | None = None, kill: tuple[str, str] | None = None) -> list[str]:
    """argv running `mac-watchdog` in a child process with these seams plugged in (run it with
    cwd = the checkout): probes redirected to `port`, a SIGKILL after the journal's STEP:STATUS."""
    transport = f"redirect({port})" if port is not None else "None"
    events = f"kill_after{kill!r}" if kill is not None else "ignore"
    code = ("import sys; from tests.watchdog.seams import kill_after, redirect; "
            "from watchdog.cli import main; from watchdog.context import Seams; "
            "from watchdog.events import ignore; "
            f"main(sys.argv[1:], Seams(events={events}, transport={transport}))")
    return [sys.executable, "-c", code]
