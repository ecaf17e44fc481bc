"""`mac-watchdog validate`, run as a user runs it: the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
CLI = [str(Path(sys.executable).parent / "mac-watchdog")]


def run(*args: str, cwd: Path = PROJECT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_shipped_stacks_are_valid() -> None:
    result = run("validate")
    assert result.returncode == 0, result.stderr
    assert "dev: ok" in result.stdout and "prod: ok" in result.stdout


def test_broken_stack_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    text = (PROJECT / "stacks" / "Pulumi.dev.yaml").read_text()
    text = text.replace("db2: {role: mysql, host: kvm2", "db2: {role: mysql, host: kvm1")
    text = text.replace("ip: 192.168.50.22", "ip: 192.168.99.22")
    (tmp_path / "stacks" / "Pulumi.broken.yaml").write_text(text)
    result = run("validate", "--stack", "broken", "--project-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "broken: mac:nodes.db2.host = 'kvm1': also runs db1" in lines[0]
    assert "mac:nodes.web2.ip = '192.168.99.22': is outside" in lines[1]
    assert "Traceback" not in result.stderr


def test_yaml_error_and_unknown_stack(tmp_path: Path) -> None:
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "Pulumi.x.yaml").write_text("config: [unclosed\n")
    result = run("validate", "--project-dir", str(tmp_path))
    assert result.returncode == 2 and "YAML syntax error at line" in result.stderr
    result = run("validate", "--stack", "nope", "--project-dir", str(tmp_path))
    assert result.returncode == 2 and "no such stack file" in result.stderr
    assert "Traceback" not in result.stderr


def test_no_stack_files(tmp_path: Path) -> None:
    result = run("validate", "--project-dir", str(tmp_path))
    assert result.returncode == 2 and "no stack files" in result.stderr


def test_console_script_is_installed() -> None:
    assert shutil.which(CLI[0]) is not None, "run `make venv` (pip install -e '.[dev]')"
