"""Fixtures for the watchdog tests: a throw-away project, real HTTP servers on 127.0.0.x, and a
STAND-IN `pulumi` executable (records argv; deploys nothing)."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from components.stack_file import load_topology, stack_path
from components.topology import Topology
from tests.netutil import free_port
from tests.watchdog import standin_pulumi
from tests.watchdog.loopback_stack import TEST_STACK
from tests.watchdog.seams import redirect
from watchdog.probe import TransportFactory

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's Pulumi.yaml and stack files plus the loopback `test` stack."""
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True)
    shutil.copy(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
    for f in (REPO / "stacks").glob("Pulumi.*.yaml"):
        shutil.copy(f, root / "stacks" / f.name)
    (root / "stacks" / "Pulumi.test.yaml").write_text(TEST_STACK)
    return root


@pytest.fixture
def topology(project: Path) -> Topology:
    return load_topology(stack_path(project, "test"))


class StandIn:
    """A STAND-IN pulumi CLI in ROOT/bin/pulumi (not a real deploy); see standin_pulumi.py."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.exe = standin_pulumi.install(root)

    def argv(self) -> list[list[str]]:
        path = self.root / "argv.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def commands(self) -> list[list[str]]:
        """argv without the leading `--non-interactive` and with temp file names blanked."""
        out = []
        for argv in self.argv():
            args = [a for a in argv if a != "--non-interactive"]
            if "--file" in args:
                args[args.index("--file") + 1] = "FILE"
            out.append(args)
        return out

    def behave(self, **knobs: Any) -> None:
        (self.root / "behaviour.json").write_text(json.dumps(knobs))

    def set_state(self, state: dict[str, Any]) -> None:
        (self.root / "state.json").write_text(json.dumps(state))

    def state(self) -> dict[str, Any]:
        return json.loads((self.root / "state.json").read_text())


@pytest.fixture
def standin(tmp_path: Path) -> StandIn:
    return StandIn(tmp_path / "standin-pulumi")


# --------------------------------------------------------------------------------------------
# Real HTTP servers on loopback addresses.
# --------------------------------------------------------------------------------------------

HEALTHY, UNHEALTHY, SLOW, CUT = "healthy", "503", "slow", "cut"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        mode = self.server.mode
        if mode == SLOW:
            time.sleep(self.server.slow_s)
        if mode == CUT:
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"partial")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        status, body = (503, b"not synced\n") if mode == UNHEALTHY else (200, b"OK\n")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mode = HEALTHY
    slow_s = 2.0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.open_connections: set[socket.socket] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.open_connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out and hang up are part of the tests

    def kill(self) -> None:
        """Like a dead daemon: stop listening and drop every open connection."""
        self.shutdown()
        self.server_close()
        for conn in list(self.open_connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Servers:
    """One HTTP server per loopback address, all on one port; `down()` closes one for real."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._servers: dict[str, _Server] = {}

    def up(self, address: str, mode: str = HEALTHY) -> None:
        if address not in self._servers:
            server = _Server((address, self.port), _Handler)
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            self._servers[address] = server
        self._servers[address].mode = mode

    def mode(self, address: str, mode: str) -> None:
        self._servers[address].mode = mode

    def down(self, address: str) -> None:
        server = self._servers.pop(address, None)
        if server is not None:
            server.kill()

    def close(self) -> None:
        for address in list(self._servers):
            self.down(address)

    def transport(self) -> TransportFactory:
        """Probes of every target reach these servers (same IP, the servers' port)."""
        return redirect(self.port)

    def serve(self, topology: Topology) -> None:
        """Every node and every live host of `topology`, healthy."""
        for node in topology.nodes.values():
            self.up(node.ip)
        for name in topology.live_hosts:
            self.up(topology.hosts[name].address)


@pytest.fixture
def servers() -> Iterator[Servers]:
    s = Servers(free_port())
    yield s
    s.close()
