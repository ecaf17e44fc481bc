"""deploy/mac-watchdog.service: `systemd-analyze verify` and `security --offline` on the unit as
shipped (paths pointed at this checkout so ExecStart exists), and the options the README promises.

systemd-analyze comes with Debian's `systemd` package (`make packages` installs it); it needs no
running systemd. Without it these tests fail, naming the package: they do not skip.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.harness import PROJECT_DIR

UNIT = PROJECT_DIR / "deploy" / "mac-watchdog.service"
INSTALL_DIR = "/opt/mac"
MAX_EXPOSURE = 2.0  # systemd-analyze security: 0 = locked down ... 10 = exposed; <2 is "OK"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: install Debian's `systemd` package (`make packages`)"
    return found


@pytest.fixture
def unit_here(tmp_path: Path) -> Path:
    """The shipped unit with /opt/mac replaced by this checkout (verify checks ExecStart exists)."""
    assert (PROJECT_DIR / ".venv" / "bin" / "mac-watchdog").exists(), "run `make venv` first"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALL_DIR, str(PROJECT_DIR)))
    return copy


def verify(path: Path) -> tuple[int, list[str]]:
    done = subprocess.run([systemd_analyze(), "verify", "--man=no", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=path.parent)
    # verify loads every unit on the machine too; only complaints about ours count.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if path.name in line]
    return done.returncode, ours


def service() -> dict[str, list[str]]:
    """[Service] settings; a key set twice keeps both values."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_systemd_analyze_verify_is_clean(unit_here: Path) -> None:
    code, complaints = verify(unit_here)
    assert code == 0 and complaints == []


def test_verify_would_catch_a_broken_unit(unit_here: Path) -> None:
    unit_here.write_text(unit_here.read_text().replace("Restart=on-failure", "Restart=sometimes")
                         .replace("Type=notify", "Tpye=notify"))
    _, complaints = verify(unit_here)
    assert any("Tpye" in c for c in complaints) and any("sometimes" in c for c in complaints)


def test_verify_finds_a_missing_executable(tmp_path: Path) -> None:
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALL_DIR, str(tmp_path / "nowhere")))
    _, complaints = verify(copy)
    assert any("is not executable" in c for c in complaints)


def test_hardening_exposure_is_ok(unit_here: Path) -> None:
    done = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit_here)],
                          capture_output=True, text=True, timeout=60, cwd=unit_here.parent)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_the_promised_options() -> None:
    s = service()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] == ["30s"]
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["mac-watchdog"] and s["Group"] == ["mac-watchdog"]
    assert s["StateDirectory"] == ["mac-watchdog"]
    assert s["KillSignal"] == ["SIGINT"] and s["SuccessExitStatus"] == ["130"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "RestrictSUIDSGID"):
        assert s[key] == ["yes"], key
    assert s["ProtectSystem"] == ["strict"] and s["ReadWritePaths"] == [f"{INSTALL_DIR}/stacks"]
    assert s["CapabilityBoundingSet"] == [""]


def test_exec_start_is_a_valid_watchdog_command_line() -> None:
    """Every option ExecStart passes is one `mac-watchdog run` knows (its --help lists it)."""
    [line] = service()["ExecStart"]
    argv = shlex.split(line)
    assert argv[:2] == [f"{INSTALL_DIR}/.venv/bin/mac-watchdog", "run"]
    options = [a for a in argv[2:] if a.startswith("--")]
    assert options == ["--project-dir", "--state-dir", "--json-log"]
    done = subprocess.run([str(PROJECT_DIR / ".venv" / "bin" / "mac-watchdog"), "run", "--help"],
                          capture_output=True, text=True, timeout=60,
                          env={"COLUMNS": "200", "PATH": "/usr/bin"})
    for option in options:
        assert option in done.stdout, option


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
