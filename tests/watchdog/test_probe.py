"""Probes against real HTTP servers on 127.0.0.x started here (real sockets, real timeouts)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from components.topology import Topology
from tests.watchdog.conftest import CUT, SLOW, UNHEALTHY, Servers, free_port
from watchdog.probe import Prober
from watchdog.target import Kind, ProbeResult, Target, TargetKey, targets

nk, hk = TargetKey.node, TargetKey.host
TIMEOUT = 0.3
BACKENDS = ["native", "httpx"]


def probe(items: list[Target], backend: str = "native", rounds: int = 1) -> list[ProbeResult]:
    async def go() -> list[ProbeResult]:
        async with Prober(TIMEOUT, backend=backend) as prober:  # type: ignore[arg-type]
            out: list[ProbeResult] = []
            for _ in range(rounds):
                out = await prober.probe_all(items)
            return out
    return asyncio.run(go())


def node(servers: Servers, address: str, path: str = "/health.php") -> Target:
    return Target(Kind.NODE, address, f"http://{address}:{servers.port}{path}", "web")


@pytest.mark.parametrize("backend", BACKENDS)
def test_healthy_unhealthy_slow_cut_and_refused(servers: Servers, backend: str) -> None:
    servers.up("127.0.3.1")
    servers.up("127.0.3.2", UNHEALTHY)
    servers.up("127.0.3.3", SLOW)
    servers.up("127.0.3.4", CUT)
    items = [node(servers, f"127.0.3.{i}") for i in range(1, 6)]  # .5: nothing listens
    started = time.monotonic()
    ok, bad, slow, cut, refused = probe(items, backend)
    elapsed = time.monotonic() - started
    assert ok.ok and ok.error is None and ok.latency_s < TIMEOUT
    assert not bad.ok and bad.error == "HTTP 503"
    assert not slow.ok and slow.error == "timeout after 0.3 s"
    assert TIMEOUT <= slow.latency_s < TIMEOUT + 0.2
    assert not cut.ok and cut.error and ("closed" in cut.error or "Protocol" in cut.error)
    assert not refused.ok and refused.error == "connection refused"
    assert elapsed < TIMEOUT + 0.5  # concurrently, each bounded by its own timeout


def test_keep_alive_survives_a_server_restart(servers: Servers) -> None:
    """The reused connection dies with the server; the next probe reconnects, no false failure."""
    servers.up("127.0.3.10")
    item = node(servers, "127.0.3.10")

    async def go() -> list[bool]:
        async with Prober(TIMEOUT) as prober:
            first = await prober.probe(item)
            servers.down("127.0.3.10")
            down = await prober.probe(item)
            servers.up("127.0.3.10")
            again = await prober.probe(item)
            return [first.ok, down.ok, again.ok]
    assert asyncio.run(go()) == [True, False, True]


def _listener(address: str, greeting: bytes | None) -> tuple[socket.socket, int]:
    """A TCP listener on `address` that sends `greeting` to each client (None: says nothing,
    like a middlebox that accepts every connection)."""
    sock = socket.socket()
    sock.bind((address, 0))
    sock.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if greeting is not None:
                conn.sendall(greeting)
            threading.Timer(2.0, conn.close).start()

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_host_probe_reads_the_ssh_banner(servers: Servers) -> None:
    """Issue 11: an open port 22 alone is not a host; sshd's `SSH-2.0-` line is."""
    sshd, sshd_port = _listener("127.0.3.20", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    silent, silent_port = _listener("127.0.3.22", None)
    other, other_port = _listener("127.0.3.23", b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        up = Target(Kind.HOST, "h1", f"127.0.3.20:{sshd_port}", "host")
        down = Target(Kind.HOST, "h2", f"127.0.3.21:{sshd_port}", "host")
        middlebox = Target(Kind.HOST, "h3", f"127.0.3.22:{silent_port}", "host")
        not_ssh = Target(Kind.HOST, "h4", f"127.0.3.23:{other_port}", "host")
        a, b, c, d = probe([up, down, middlebox, not_ssh])
        assert a.ok and not b.ok and b.error == "connection refused"
        assert not c.ok and c.error is not None and "timeout" in c.error
        assert not d.ok and d.error is not None and "no SSH banner" in d.error
    finally:
        for sock in (sshd, silent, other):
            sock.close()
    servers.up("127.0.3.24")  # an HTTP server on the port: accepts, never says SSH
    [r] = probe([Target(Kind.HOST, "h5", f"127.0.3.24:{servers.port}", "host")])
    assert not r.ok


def test_host_probe_times_out_on_a_silent_address() -> None:
    """A listener whose backlog is full never completes the handshake: the probe times out."""
    port = free_port()
    sock = socket.socket()
    sock.bind(("127.0.3.30", port))
    sock.listen(0)
    fillers = []
    try:
        for _ in range(8):  # fill the accept queue so further SYNs are dropped
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.3.30", port))
            fillers.append(f)
        time.sleep(0.05)
        [r] = probe([Target(Kind.HOST, "h", f"127.0.3.30:{port}", "host")])
        assert not r.ok
        assert r.error is not None
    finally:
        for f in fillers:
            f.close()
        sock.close()


def test_concurrency_is_bounded(servers: Servers) -> None:
    servers.up("127.0.3.40", SLOW)
    items = [Target(Kind.NODE, f"n{i}", f"http://127.0.3.40:{servers.port}/x?{i}", "web") for i in range(6)]

    async def go() -> tuple[float, list[ProbeResult]]:
        async with Prober(0.2, concurrency=2) as prober:
            start = time.monotonic()
            results = await prober.probe_all(items)
            return time.monotonic() - start, results
    elapsed, results = asyncio.run(go())
    assert elapsed >= 3 * 0.2 - 0.02  # 6 probes, 2 at a time, 0.2 s each
    # latency is the probe's own; asked_at is when the round asked, before waiting for a slot
    assert all(r.latency_s < 0.3 for r in results)
    assert max(r.at - (r.asked_at or r.at) for r in results) >= 0.55


def test_targets_cover_live_hosts_and_every_node(topology: Topology) -> None:
    keys = [t.key for t in targets(topology.with_(failed_hosts=("kvm3",), spares=("spare1",)))]
    assert hk("kvm3") not in keys
    assert {hk("kvm1"), hk("spare1"), nk("lb1"), nk("db1")} <= set(keys)
    urls = {t.name: t.address for t in targets(topology)}
    # Each node's self-check (SELF_ENDPOINTS), not the strict check HAProxy routes on.
    assert urls["db1"] == "http://127.0.2.11:9200/node"
    assert urls["web1"] == "http://127.0.2.21:80/alive.php"
    assert urls["lb1"] == "http://127.0.2.10:8404/node"
    assert urls["kvm1"] == "127.0.1.1:22"


def test_probing_does_not_block_the_loop(servers: Servers) -> None:
    """While probes wait on a slow server the loop keeps ticking."""
    servers.up("127.0.3.50", SLOW)
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        async with Prober(TIMEOUT) as prober:
            await prober.probe(node(servers, "127.0.3.50"))
        stop.set()
        await task
    asyncio.run(go())
    assert ticks >= 15
    assert threading.active_count() >= 1
