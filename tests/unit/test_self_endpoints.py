"""The self-check endpoints the watchdog probes (SELF_ENDPOINTS): a node answers 200 while its own
service works and names a degraded dependency in the body, for each role; against the real
clustercheck handler, HAProxy and PHP on loopback (each skipped where its binary is missing)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from components.roles import lb, web
from components.roles.scripts.clustercheck import make_handler, node_report
from components.topology import HEALTH_ENDPOINTS, SELF_ENDPOINTS, Role

SYNCED = {"wsrep_local_state": "4", "wsrep_local_state_comment": "Synced",
          "wsrep_cluster_status": "Primary", "wsrep_cluster_size": "3",
          "wsrep_incoming_addresses": "10.0.0.11:3306,10.0.0.12:3306"}


@pytest.mark.parametrize(("state", "code", "degraded"), [
    ({}, 503, None),  # the server does not answer: the node itself is broken
    (SYNCED, 200, None),
    ({**SYNCED, "wsrep_local_state": "2", "wsrep_local_state_comment": "Donor/Desynced"}, 200,
     "not Synced (wsrep_local_state=2 Donor/Desynced)"),
    ({**SYNCED, "wsrep_local_state": "1", "wsrep_local_state_comment": "Joining"}, 200,
     "not Synced (wsrep_local_state=1 Joining)"),
    ({**SYNCED, "wsrep_cluster_status": "non-Primary", "wsrep_local_state": "0"}, 200,
     "not in a Primary component (wsrep_cluster_status=non-Primary)"),
])
def test_clustercheck_node_report(state: dict[str, str], code: int, degraded: str | None) -> None:
    got_code, report = node_report(state)
    assert (got_code, report["degraded"]) == (code, degraded)
    if code == 200:
        assert report["sees"] == {"10.0.0.11": True, "10.0.0.12": True}


def test_clustercheck_serves_node_as_json_and_keeps_its_strict_root() -> None:
    state = dict(SYNCED, wsrep_local_state="2", wsrep_local_state_comment="Donor/Desynced")

    class Cache:
        def state(self) -> dict[str, str]:
            return state

    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Cache()))  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        node = httpx.get(url + SELF_ENDPOINTS[Role.MYSQL].path, timeout=5)
        assert node.status_code == 200 and node.headers["content-type"] == "application/json"
        assert node.json()["degraded"].startswith("not Synced")
        assert httpx.get(url + HEALTH_ENDPOINTS[Role.MYSQL].path, timeout=5).status_code == 503
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


@pytest.fixture
def stopped() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait(5)


def test_haproxy_self_check_answers_200_without_backends(
        tmp_path: Path, stopped: list[subprocess.Popen[bytes]]) -> None:
    """The rendered haproxy.cfg, run for real on loopback with web and DB servers that do not
    exist: the monitor URI fails (HAProxy routes on it), the self-check says why and answers 200."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed here")
    # 127.0.0.2: the LB's own ports are those of the topology (8404); nobody listens on .3-.6.
    lb_ip = "127.0.0.2"
    web_servers = [lb.Backend("web1", "127.0.0.3"), lb.Backend("web2", "127.0.0.4")]
    db_servers = [lb.Backend("db1", "127.0.0.5"), lb.Backend("db2", "127.0.0.6")]
    paths = lb.HaproxyPaths(stats_socket=str(tmp_path / "admin.sock"), log_target="stdout",
                            user=None, group=None)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(lb.render_haproxy_cfg("lb1", lb_ip, web_servers, db_servers, paths,
                                         http_port=_free_port(), mysql_port=_free_port()))
    stopped.append(subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL))
    port = SELF_ENDPOINTS[Role.LB].port
    self_url = f"http://{lb_ip}:{port}{SELF_ENDPOINTS[Role.LB].path}"
    _wait_http(self_url)
    time.sleep(1.5)  # the first checks mark every server down
    answer = httpx.get(self_url, timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"degraded": "no web server up",
                             "sees": {b.ip: False for b in (*web_servers, *db_servers)}}
    monitor = f"http://{lb_ip}:{port}{HEALTH_ENDPOINTS[Role.LB].path}"
    assert httpx.get(monitor, timeout=5).status_code == 503


def test_web_alive_reports_the_db_as_a_dependency(
        tmp_path: Path, stopped: list[subprocess.Popen[bytes]]) -> None:
    """The PHP app under PHP's own server: /alive.php is 200 whatever the DB does and reports
    the latest /health.php outcome; without its config the node itself is broken (503)."""
    php = shutil.which("php")
    if php is None or subprocess.run([php, "-m"], capture_output=True, text=True,
                                     check=False).stdout.find("mysqli") < 0:
        pytest.skip("php with mysqli is not installed here")
    docroot = tmp_path / "www"
    for name, text in web.app_sources().items():
        (docroot / name).parent.mkdir(parents=True, exist_ok=True)
        (docroot / name).write_text(text)
    config = tmp_path / "app.json"
    settings = json.loads(web.render_app_config("web1", ["127.0.0.1"], "pw", port=_free_port()))
    config.write_text(json.dumps(settings | {"health_budget_s": 0.2}))  # nobody listens there
    port = _free_port()
    env = {**os.environ, "MAC_APP_CONFIG": str(config), "TMPDIR": str(tmp_path)}
    stopped.append(subprocess.Popen([php, "-S", f"127.0.0.1:{port}", "-t", str(docroot)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    base = f"http://127.0.0.1:{port}"
    alive = base + SELF_ENDPOINTS[Role.WEB].path
    _wait_http(alive)
    first = httpx.get(alive, timeout=5)
    assert first.status_code == 200 and first.json()["degraded"] is None  # nothing known yet
    assert httpx.get(base + HEALTH_ENDPOINTS[Role.WEB].path, timeout=5).status_code == 503
    after = httpx.get(alive, timeout=5)
    assert after.status_code == 200
    assert after.json()["degraded"].startswith("no DB host answers")
    config.unlink()
    assert httpx.get(alive, timeout=5).status_code == 503
