"""systemd's notify protocol (sd_notify(3)): READY, STATUS, STOPPING and watchdog pings.

Datagrams of `KEY=VALUE` lines to the unix socket in $NOTIFY_SOCKET (a path, or `@name` for the
abstract namespace). Without that variable (not started by systemd with Type=notify) every call is
a no-op. A send that fails is logged once and never stops the watchdog.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from watchdog.events import Event, EventKind

log = logging.getLogger(__name__)

# Ping at this share of WatchdogSec: systemd's own advice is "half the time", leaving room for a
# slow round without being killed.
PING_SHARE = 0.5


class Notifier:
    """Talks to the service manager. `ping()` is rate-limited to the watchdog's ping interval."""

    def __init__(self, address: str | None, watchdog_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.address = address
        self.watchdog_s = watchdog_s
        self._clock = clock
        self._last_ping: float | None = None
        self._broken = False
        self._sock: socket.socket | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None,
                     clock: Callable[[], float] = time.monotonic) -> Notifier:
        """From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (the pings are for that PID only)."""
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_s = None
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog_s = int(usec) / 1_000_000
        return cls(address, watchdog_s, clock)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_interval_s(self) -> float | None:
        return None if self.watchdog_s is None else self.watchdog_s * PING_SHARE

    def send(self, **fields: str) -> bool:
        """One datagram `KEY=value` per field (keys upper-cased); True when it was sent."""
        if self.address is None or self._broken:
            return False
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                # Never blocking: a manager that reads slowly must not stall the watchdog's loop.
                self._sock = socket.socket(socket.AF_UNIX,
                                           socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
            self._sock.sendto(message, target)
        except BlockingIOError:
            log.debug("the service manager's queue is full; dropped %r", message)
            return False
        except OSError as err:
            self._broken = True
            log.warning("cannot notify the service manager at %s (%s); not trying again", self.address, err)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(ready="1", **({"status": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.send(status=text)

    def stopping(self, status: str = "") -> bool:
        return self.send(stopping="1", **({"status": status} if status else {}))

    def ping(self) -> bool:
        """WATCHDOG=1, at most once per ping interval; call it after every healthy round."""
        interval = self.ping_interval_s
        if interval is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < interval:
            return False
        if self.send(watchdog="1"):
            self._last_ping = now
            return True
        return False

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class LoopNotifier:
    """An event sink for `mac-watchdog run`: READY=1 after the loop's first round, WATCHDOG=1 after
    every round (rate-limited), STATUS when what the loop is doing changes. Rounds come only from
    a live loop (watchdog.events ROUND), so a hung loop stops the pings and systemd restarts it."""

    def __init__(self, notifier: Notifier, stack: str) -> None:
        self.notifier = notifier
        self.stack = stack
        self._ready = False
        self._status = ""

    def __call__(self, event: Event) -> None:
        if event.kind is not EventKind.ROUND:
            return
        data = event.data
        status = f"watching stack {self.stack}"
        if data.get("remediating"):
            status += "; remediating"
        if data.get("refusing"):
            status += f"; refusing ({data['refusing']})"
        if not self._ready:
            self._ready = True
            self._status = status
            self.notifier.ready(status)
        elif status != self._status:
            self._status = status
            self.notifier.status(status)
        self.notifier.ping()

    def stopping(self) -> None:
        self.notifier.stopping(f"stopping the watchdog of stack {self.stack}")
