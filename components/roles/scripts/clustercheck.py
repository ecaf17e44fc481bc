#!/usr/bin/env python3
"""Galera health over HTTP: 200 only when this node's wsrep_local_state is 4 (Synced), else 503.

Installed on every mysql node as /usr/local/sbin/mac-clustercheck and run as a service; HAProxy,
the watchdog and the lab probe it. Stdlib only: it runs under the cloud image's python3 and asks
the local server through the `mariadb` client over the unix socket (root has unix_socket auth).

GET /node is what the watchdog probes: 200 whenever the local server answers, with a JSON body
that says whether the node waits on its cluster (`degraded`: a non-Primary component while a view
re-forms, a donor or joiner state) and which data nodes are in its component (`sees`). Only a
server that does not answer is 503: the watchdog replaces a node for that, never for a state.

GET /position (read-only) serves the position mac-galera-start recovered after an unclean stop
(`uuid:seqno`, from --position-file) so the other DB node can compare; 404 when there is none or
while the local server answers (a running server's position moves: it must not be compared).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SYNCED = "4"
QUERY = ("SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state','wsrep_cluster_status',"
         "'wsrep_local_state_comment','wsrep_cluster_size','wsrep_incoming_addresses')")
POSITION_PATH = "/position"
NODE_PATH = "/node"
POSITION = re.compile(r"^[0-9a-fA-F-]{36}:-?[0-9]+$")
CACHE_S = 0.2  # several probers (two HAProxy checks, the watchdog) share one client run


def query_state(client: str, socket: str, timeout_s: float) -> dict[str, str]:
    """wsrep status variables, or {} when the server does not answer in time."""
    try:
        out = subprocess.run(
            [client, "--no-defaults", "-uroot", f"--socket={socket}", "-N", "-B",
             "--connect-timeout=1", "-e", QUERY],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if out.returncode != 0:
        return {}
    return dict(line.split("\t", 1) for line in out.stdout.splitlines() if "\t" in line)


def is_healthy(state: dict[str, str]) -> bool:
    return state.get("wsrep_local_state") == SYNCED and state.get("wsrep_cluster_status") == "Primary"


def node_report(state: dict[str, str]) -> tuple[int, dict[str, object]]:
    """GET /node: (200, state) while the server answers, whatever its wsrep state; else 503.

    Not Synced or not Primary is the cluster's doing (a view change after a member left, a state
    transfer to a joiner, lost quorum), not this node's: reported as `degraded`, never as failed.
    """
    if not state:
        return 503, {"degraded": None, "error": "the local server does not answer"}
    local = state.get("wsrep_local_state", "unknown")
    comment = state.get("wsrep_local_state_comment", "unknown")
    status = state.get("wsrep_cluster_status", "unknown")
    degraded = None
    if status != "Primary":
        degraded = f"not in a Primary component (wsrep_cluster_status={status})"
    elif local != SYNCED:
        degraded = f"not Synced (wsrep_local_state={local} {comment})"
    addresses = [a.strip() for a in state.get("wsrep_incoming_addresses", "").split(",")]
    sees = {a.rsplit(":", 1)[0]: True for a in addresses if a and a != "AUTO"}
    return 200, {"degraded": degraded, "wsrep_local_state": local, "state": comment,
                 "cluster_status": status, "cluster_size": state.get("wsrep_cluster_size"),
                 "sees": sees}


class _Cache:
    def __init__(self, client: str, socket: str, timeout_s: float) -> None:
        self._args = (client, socket, timeout_s)
        self._lock = threading.Lock()
        self._at = 0.0
        self._state: dict[str, str] = {}

    def state(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._at > CACHE_S:
                self._state = query_state(*self._args)
                self._at = time.monotonic()
            return self._state


def read_position(path: str) -> str | None:
    """The published recovered position, or None (no file, or not `uuid:seqno`)."""
    if not path:
        return None
    try:
        with open(path, encoding="ascii") as handle:
            text = handle.read(128).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if POSITION.match(text) else None


def make_handler(cache: _Cache, position_file: str = "") -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state = cache.state()
            path = self.path.split("?", 1)[0]
            content_type = "text/plain"
            if path == POSITION_PATH:
                position = None if state else read_position(position_file)
                code, body = (200, f"{position}\n") if position else (404, "no recovered position\n")
            elif path == NODE_PATH:
                code, report = node_report(state)
                body, content_type = json.dumps(report) + "\n", "application/json"
            else:
                code = 200 if is_healthy(state) else 503
                body = (f"wsrep_local_state={state.get('wsrep_local_state', 'unknown')} "
                        f"wsrep_cluster_status={state.get('wsrep_cluster_status', 'unknown')}\n")
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body.encode())

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every 500 ms would flood the journal

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--socket", default="/run/mysqld/mysqld.sock")
    parser.add_argument("--client", default="mariadb")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--position-file", default="/run/mac-galera/position",
                        help="the recovered position mac-galera-start publishes (GET /position)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.bind, args.port),
                                 make_handler(_Cache(args.client, args.socket, args.timeout),
                                              args.position_file))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
