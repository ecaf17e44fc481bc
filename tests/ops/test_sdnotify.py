"""watchdog.sdnotify against a real unix datagram socket, as systemd's NOTIFY_SOCKET is."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from watchdog.sdnotify import Notifier


class Manager:
    """The service manager's end: a bound SOCK_DGRAM socket; `received()` drains it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(2)

    def received(self) -> list[dict[str, str]]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096).decode()
                out.append(dict(line.split("=", 1) for line in data.splitlines()))
        except BlockingIOError:
            pass
        finally:
            self.sock.settimeout(2)
        return out


@pytest.fixture(params=["path", "abstract"])
def manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Manager]:
    abstract = f"@mac-test-{os.getpid()}-{id(tmp_path)}"
    address = str(tmp_path / "notify") if request.param == "path" else abstract
    m = Manager(address)
    yield m
    m.sock.close()


def env(manager: Manager, usec: int | None = 2_000_000, pid: int | None = None) -> dict[str, str]:
    e = {"NOTIFY_SOCKET": manager.address}
    if usec is not None:
        e["WATCHDOG_USEC"] = str(usec)
        e["WATCHDOG_PID"] = str(os.getpid() if pid is None else pid)
    return e


def test_ready_status_stopping(manager: Manager) -> None:
    n = Notifier.from_environ(env(manager))
    assert n.ready("watching stack dev: 9 targets")
    assert n.status("round 3")
    assert n.stopping()
    assert manager.received() == [{"READY": "1", "STATUS": "watching stack dev: 9 targets"},
                                  {"STATUS": "round 3"}, {"STOPPING": "1"}]


def test_pings_at_most_every_half_watchdog_interval(manager: Manager) -> None:
    now = [100.0]
    n = Notifier.from_environ(env(manager, usec=2_000_000), clock=lambda: now[0])
    assert n.ping_interval_s == 1.0
    sent = []
    for _ in range(10):  # rounds every 0.25 s for 2.5 s
        sent.append(n.ping())
        now[0] += 0.25
    assert sent == [True, False, False, False, True, False, False, False, True, False]
    assert manager.received() == [{"WATCHDOG": "1"}] * 3


def test_no_pings_without_a_watchdog_or_for_another_pid(manager: Manager) -> None:
    assert Notifier.from_environ(env(manager, usec=None)).ping() is False
    other = Notifier.from_environ(env(manager, pid=os.getpid() + 1))
    assert other.watchdog_s is None and other.ping() is False
    assert other.ready()  # READY still goes out: only the watchdog is for one PID
    assert manager.received() == [{"READY": "1"}]


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier.from_environ({})
    assert not n.enabled
    assert n.ready() is False and n.ping() is False and n.stopping() is False


def test_a_dead_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens"), "WATCHDOG_USEC": "1000"})
    assert n.ready() is False
    assert n.ping() is False and n.status("x") is False
    assert [r.getMessage() for r in caplog.records if "cannot notify" in r.getMessage()] == [
        f"cannot notify the service manager at {tmp_path / 'nobody-listens'} "
        "([Errno 2] No such file or directory); not trying again"]
