"""A real etcd cluster on loopback for the leadership tests: members started and stopped by PID,
data dirs in tmp; and a TCP proxy in front of one member that a test can cut (a partition that
leaves the watchdog's probes alone). Used by tests and by bench/leader.py."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port

ETCD = "etcd"


def etcd_missing() -> str | None:
    if shutil.which(ETCD) is None:
        return "etcd is not installed (Debian package etcd-server; `make packages` installs it)"
    return None


class Member:
    def __init__(self, name: str, data_dir: Path, client_port: int, peer_port: int) -> None:
        self.name = name
        self.data_dir = data_dir
        self.client_port = client_port
        self.peer_port = peer_port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """`size` members on 127.0.0.1, each with its own client and peer port."""

    def __init__(self, root: Path, size: int = 3) -> None:
        ports: set[int] = set()
        while len(ports) < 2 * size:
            ports.add(free_port())
        it = iter(sorted(ports))
        self.members = [Member(f"m{i}", root / f"etcd-m{i}", next(it), next(it)) for i in range(size)]
        self.initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        self.token = f"mac-test-{id(self)}"

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    @property
    def urls(self) -> str:
        return ",".join(self.endpoints)

    def start(self, i: int | None = None) -> None:
        for m in self.members if i is None else [self.members[i]]:
            m.data_dir.mkdir(parents=True, exist_ok=True)
            with open(m.data_dir.with_suffix(".log"), "ab") as log:  # the child keeps its copy
                m.proc = subprocess.Popen(
                    [ETCD, "--name", m.name, "--data-dir", str(m.data_dir),
                     "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
                     "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                     "--initial-cluster", self.initial, "--initial-cluster-token", self.token,
                     "--initial-cluster-state", "new", "--logger", "zap", "--log-outputs", "stderr"],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self, i: int) -> None:
        """SIGKILL member `i` by its PID (its data dir stays, so `start(i)` brings it back)."""
        m = self.members[i]
        if m.proc is not None:
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
            m.proc = None

    def close(self) -> None:
        for i in range(len(self.members)):
            self.stop(i)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Until every running member says it is healthy (the cluster has a leader)."""
        deadline = time.monotonic() + timeout_s
        for m in self.members:
            if m.proc is None:
                continue
            while True:
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if httpx.get(m.url + "/health", timeout=1.0).json().get("health") == "true":
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd member {m.name} not healthy within {timeout_s:g} s; "
                                       f"see {m.data_dir.with_suffix('.log')}")
                time.sleep(0.1)


class CutProxy:
    """A TCP proxy from a loopback port to `target`; `cut()` blackholes it (connections stay open,
    nothing flows, new ones hang), as a network partition does; `heal()` undoes it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut_at: float | None = None
        self._open: list[socket.socket] = []
        self._upstream: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.cut_at = time.time()
        with self._lock:
            for s in self._upstream:  # etcd's side goes; the watchdog's side hears nothing
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def heal(self) -> None:
        self.cut_at = None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.cut_at is not None:
                with self._lock:
                    self._open.append(client)  # held open, never answered
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.append(client)
                self._upstream.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data or self.cut_at is not None:
                return  # cut: the other side hears nothing more (no FIN, no RST)
            try:
                dst.sendall(data)
            except OSError:
                return


def running_cluster(root: Path, size: int = 3) -> EtcdCluster:
    """A healthy cluster of `size` members (the caller closes it)."""
    cluster = EtcdCluster(root, size)
    cluster.start()
    try:
        cluster.wait_healthy()
    except BaseException:
        cluster.close()
        raise
    return cluster


@pytest.fixture(name="etcd")
def etcd_fixture(tmp_path: Path) -> Iterator[EtcdCluster]:
    """`etcd`: a 3-member cluster for one test (import etcd_fixture into the test module); skips
    without etcd."""
    reason = etcd_missing()
    if reason:
        pytest.skip(reason)
    cluster = running_cluster(tmp_path / "etcd")
    yield cluster
    cluster.close()
