"""A real Prometheus (Debian's `prometheus`) on loopback for the tests: scrapes given targets every
second and evaluates the shipped alert rules with their `for:` shortened, in a temporary dir."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.netutil import free_port
from tests.unit.harness import PROJECT_DIR

RULES = PROJECT_DIR / "deploy" / "prometheus" / "mac-watchdog.rules.yml"


def binary() -> str:
    found = shutil.which("prometheus")
    assert found, "prometheus is missing: install Debian's `prometheus` package (`make packages`)"
    return found


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], job: str = "mac-watchdog",
                 for_s: float = 1) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        rules = re.sub(r"(?m)^(\s+for:) \S+$", rf"\1 {for_s:g}s", RULES.read_text())
        (workdir / "rules.yml").write_text(rules)
        (workdir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s, scrape_timeout: 900ms}\n"
            "rule_files: [rules.yml]\n"
            f"scrape_configs:\n  - job_name: {job}\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [binary(), f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--web.enable-lifecycle"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=workdir)
        self.workdir = workdir
        self.wait_for(lambda: self._ready(), 30, "prometheus ready")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_for(self, check: Any, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.workdir / "prometheus.log").read_text()
                raise AssertionError(f"prometheus exited: {log[-3000:]}")
            value = check()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; alerts: {self.alerts()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        try:
            body = httpx.get(f"{self.url}/api/v1/alerts", timeout=5).json()
        except httpx.HTTPError:
            return []
        alerts: list[dict[str, Any]] = body["data"]["alerts"]
        return alerts

    def firing(self) -> dict[str, dict[str, str]]:
        return {a["labels"]["alertname"]: a["labels"] for a in self.alerts() if a["state"] == "firing"}

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
