"""Fence, journal, lock, alerts and the HTTP client's framing, each on its own."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from components.topology import Host, Topology
from tests.watchdog.conftest import free_port
from watchdog.alert import Alerter
from watchdog.detect import Failures
from watchdog.errors import FenceError, FenceRefused, JournalError, LockHeld
from watchdog.fence import fence
from watchdog.http1 import Connection
from watchdog.journal import DONE, STARTED, Journal
from watchdog.lock import RemediationLock
from watchdog.plan import Action, Step, plan
from watchdog.present import describe
from watchdog.reasons import Reason
from watchdog.remediate import backoff_delay


def host(fence_cmd: str | None) -> Host:
    return Host("kvm1", "qemu+ssh://root@10.0.0.11/system", "10.0.0.11", fence_cmd)


def test_fence_runs_the_command_and_reports_failures(tmp_path: Path) -> None:
    marker = tmp_path / "off"
    assert not fence(host(f"touch {marker}")).skipped and marker.exists()
    assert fence(host("none")).skipped
    with pytest.raises(FenceRefused, match=r"mac:hosts\.kvm1\.fence"):
        fence(host(None))
    with pytest.raises(FenceError, match="exited with 1"):
        fence(host("false"))
    with pytest.raises(FenceError, match=r"did not finish within 0\.2 s"):
        fence(host("sleep 5"), timeout_s=0.2)
    with pytest.raises(FenceError, match="cannot start: /no/such/fence"):
        fence(host("/no/such/fence --now"))
    with pytest.raises(FenceError, match="cannot be parsed"):
        fence(host("ipmitool 'unterminated"))


def test_journal_resume_point_history_and_torn_line(tmp_path: Path, topology: Topology) -> None:
    clock = iter(range(1000, 2000))
    j = Journal(tmp_path, clock=lambda: float(next(clock)))
    p = plan(topology, Failures(hosts=("kvm1",)))
    rid = j.begin(p, "test")
    for step in (Step.FENCE, Step.PRUNE_STATE):
        j.step(rid, step, STARTED)
        j.step(rid, step, DONE)
    j.step(rid, Step.WRITE_CONFIG, STARTED)
    with open(j.path, "a") as f:
        f.write('{"event": "step", "id": "')  # torn by a crash
    pending = j.pending()
    assert pending is not None and pending.id == rid
    assert pending.next_step is Step.WRITE_CONFIG  # started but not done: run it again
    assert pending.plan.topology == p.topology and pending.plan.moves == p.moves
    history = j.history()
    assert history.remediations[0].action is Action.FAILOVER
    assert set(history.remediations[0].moved) == {"db1", "web1"}
    j.path.write_text(j.path.read_text() + "\n" + json.dumps({"event": "finished", "id": rid}) + "\n")
    with pytest.raises(JournalError, match="is not JSON"):
        j.pending()


def test_journal_holds_no_secrets_and_is_private(tmp_path: Path, topology: Topology) -> None:
    j = Journal(tmp_path)
    j.begin(plan(topology, Failures(hosts=("kvm1",))), "test")
    text = j.path.read_text()
    assert "secure" not in text and "c2VjcmV0" not in text
    assert j.path.stat().st_mode & 0o777 == 0o600


def test_dry_run_description_names_the_fence_program_not_its_arguments(topology: Topology) -> None:
    hosts = dict(topology.hosts)
    hosts["kvm1"] = Host("kvm1", hosts["kvm1"].uri, hosts["kvm1"].address,
                         "ipmitool -H 10.0.1.11 -U admin -P hunter2 chassis power off")
    lines = describe(plan(topology.with_(hosts=hosts), Failures(hosts=("kvm1",))))
    assert lines[0] == "fence kvm1: ipmitool ..."
    assert "hunter2" not in "\n".join(lines)


def test_lock_is_exclusive(tmp_path: Path) -> None:
    with RemediationLock(tmp_path), pytest.raises(LockHeld, match=f"pid {os.getpid()}"), \
            RemediationLock(tmp_path):
        pass
    with RemediationLock(tmp_path):
        pass  # released


def test_backoff() -> None:
    assert [backoff_delay(n, 10, 60) for n in range(6)] == [0, 10, 20, 40, 60, 60]


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_alert_posts_json_to_the_webhook_and_survives_a_dead_one(caplog: pytest.LogCaptureFixture) -> None:
    server = ThreadingHTTPServer(("127.0.4.1", free_port()), _Hook)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.4.1:{server.server_address[1]}/hook?token=s3cret"
        assert Alerter(url, "test").alert("refused", "no spare", reason=Reason.NO_SPARE, host="kvm1")
        sent = _Hook.received[-1]
        assert (sent["event"], sent["reason"], sent["host"]) == ("refused", "no_spare", "kvm1")
    finally:
        server.shutdown()
        server.server_close()
    dead = Alerter(f"http://127.0.4.2:{free_port()}/hook?token=s3cret", "test")
    assert not dead.alert("x", "y", reason=Reason.UNKNOWN)
    assert "s3cret" not in caplog.text  # the URL (and its token) never reaches the log
    assert Alerter(None, "test").alert("x", "only logged", reason=Reason.UNKNOWN)


async def _serve_raw(payload: bytes) -> tuple[asyncio.AbstractServer, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(payload)
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.4.3", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(("payload", "expected"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n", 200),
    (b"HTTP/1.0 503 Service Unavailable\r\n\r\nGalera not synced", 503),  # close-delimited
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nshort", "error"),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "error"),
])
def test_http1_framing(payload: bytes, expected: int | str) -> None:
    async def go() -> int | str:
        server, port = await _serve_raw(payload)
        try:
            return await Connection(f"http://127.0.4.3:{port}/").get()
        except Exception:
            return "error"
        finally:
            server.close()
    assert asyncio.run(go()) == expected


def test_a_torn_journal_tail_is_repaired_by_the_next_entry(tmp_path: Path, topology: Topology) -> None:
    """Issue 11: a crash mid-write leaves half a line; the next entry must not glue onto it (the
    watchdog then refused to start and lost the open remediation)."""
    j = Journal(tmp_path)
    p = plan(topology, Failures(hosts=("kvm1",)))
    rid = j.begin(p, "test")
    j.step(rid, Step.FENCE, STARTED)
    with open(j.path, "a") as f:
        f.write('{"ts":1.0,"event":"step","id":"' + rid + '","step":"fe')  # torn by a crash
    restarted = Journal(tmp_path)
    restarted.step(rid, Step.FENCE, STARTED)  # the resumed watchdog's next entry
    restarted.step(rid, Step.FENCE, DONE)
    pending = restarted.pending()
    assert pending is not None and pending.id == rid and pending.next_step is Step.PRUNE_STATE
    assert all(line.startswith("{") and line.endswith("}") for line in j.path.read_text().splitlines())
    # a file that is one torn line and nothing else
    lone = Journal(tmp_path / "lone")
    lone.state_dir.mkdir()
    lone.path.write_text('{"ts":1.0,"ev')
    lone.append({"event": "note"})
    assert [e["event"] for e in lone.entries()] == ["note"]
