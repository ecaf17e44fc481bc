"""`mac-watchdog run --json-log`: one JSON object per log line; decisions carry the whole plan.

The dry runs here deploy nothing; the STAND-IN pulumi records that nobody called it.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.stack_file import load_topology, stack_path
from tests.watchdog.conftest import REPO, Servers, StandIn
from tests.watchdog.seams import cli_command
from watchdog.cli import app
from watchdog.context import Seams
from watchdog.jsonlog import FIELDS_ATTR, JsonFormatter, fields

KVM1_DOWN = ("127.0.1.1", "127.0.2.11", "127.0.2.21")  # kvm1, db1, web1


def test_formatter_one_json_object_with_the_event_fields() -> None:
    record = logging.LogRecord("watchdog.watch", logging.INFO, __file__, 1, "decision: %s", ("x",),
                               None)
    record.__dict__.update(fields("decision", action="failover", plan={"moves": []}))
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "decision: x" and entry["level"] == "INFO"
    assert entry["event"] == "decision" and entry["action"] == "failover"
    assert entry["plan"] == {"moves": []} and entry["ts"] == pytest.approx(record.created, abs=0.001)
    plain = logging.LogRecord("x", logging.WARNING, __file__, 1, "no fields", (), None)
    assert set(json.loads(JsonFormatter().format(plain))) == {"ts", "level", "logger", "message"}


def _serve_with_kvm1_down(project: Path, servers: Servers) -> list[str]:
    servers.serve(load_topology(stack_path(project, "test")))
    for address in KVM1_DOWN:
        servers.down(address)
    return ["--project-dir", str(project), "--state-dir", str(project / "state"), "--stack", "test"]


def test_run_dry_run_logs_one_decision_record_with_the_plan(
        project: Path, servers: Servers, standin: StandIn, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    common = _serve_with_kvm1_down(project, servers)
    result = CliRunner().invoke(app, ["run", "--once", "--dry-run", "--json-log",
                                      "--pulumi-root", str(standin.root), *common],
                                obj=Seams(transport=servers.transport()))
    assert result.exit_code == 1, result.output
    events = [getattr(r, FIELDS_ATTR) for r in caplog.records if hasattr(r, FIELDS_ATTR)]
    decisions = [e for e in events if e["event"] == "decision"]
    assert len(decisions) == 1
    [d] = decisions
    assert d["action"] == "failover" and d["dry_run"] is True and d["isolated"] is False
    assert d["code"] == d["plan"]["code"] == "host_failed"
    assert d["failed_hosts"] == ["kvm1"] and d["failed_nodes"] == []
    assert d["plan"]["moves"] == [{"node": "db1", "from": "kvm1", "to": "spare1"},
                                  {"node": "web1", "from": "kvm1", "to": "spare1"}]
    failed = {e["target"] for e in events if e["event"] == "health" and e["state"] == "failed"}
    assert failed == {"host:kvm1", "node:db1", "node:web1"}
    assert standin.argv() == [] and not (project / "state" / "journal.jsonl").exists()


def test_run_json_log_writes_json_lines_on_stderr(project: Path, servers: Servers,
                                                  standin: StandIn) -> None:
    common = _serve_with_kvm1_down(project, servers)
    out = subprocess.run([*cli_command(port=servers.port), "run",
                          "--once", "--dry-run", "--json-log", "--pulumi-root", str(standin.root),
                          *common], cwd=REPO, capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 1, out.stderr
    entries = [json.loads(line) for line in out.stderr.splitlines()]  # every line is JSON
    assert [e["plan"]["action"] for e in entries if e.get("event") == "decision"] == ["failover"]
