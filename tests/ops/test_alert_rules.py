"""The alert rules (deploy/prometheus/) with promtool: syntax, and their unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.unit.harness import PROJECT_DIR

RULES_DIR = PROJECT_DIR / "deploy" / "prometheus"
RULES = RULES_DIR / "mac-watchdog.rules.yml"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: install Debian's `prometheus` package (`make packages`)"
    return found


def test_promtool_check_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_promtool_rule_unit_tests() -> None:
    done = subprocess.run([promtool(), "test", "rules", "mac-watchdog.rules.test.yml"], cwd=RULES_DIR,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_issue_s_four_alerts_exist_and_use_exported_names() -> None:
    text = RULES.read_text()
    alerts = re.findall(r"- alert: (\w+)", text)
    assert {"MacWatchdogDown", "MacRemediationFailed", "MacWatchdogRefusing", "MacNoSpareLeft"} <= set(alerts)
    metrics_source = (PROJECT_DIR / "watchdog" / "metrics.py").read_text()
    for name in set(re.findall(r"\b(mac_watchdog_\w+)", text)):
        assert f'"{name}"' in metrics_source, name
