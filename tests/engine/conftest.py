"""Fixtures for the engine tests: the real Pulumi CLI, our language host and our provider plugins
that `make engine` built into .engine (plugins installed in .engine/home/plugins), a throw-away
file backend per test, and (for the libvirt tests) local libvirtd "hosts" started by hand and
stopped by PID, shared by the whole session (a libvirtd start costs seconds).

A test skips with the reason only when a piece is missing on the machine: `make engine` not run,
or no root / no libvirt packages for the hypervisors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from vmsite.hypervisor import Host, local_hosts
from vmsite.hypervisor import missing as hypervisor_missing

REPO = Path(__file__).resolve().parents[2]
ENGINE = REPO / ".engine"
BIN = ENGINE / "bin"
VENV = REPO / ".venv"
PASSPHRASE = "mac-engine-tests-not-secret"

# The providers the MAC program needs (pulumi_libvirt, pulumi_command, pulumi_random) and the
# versions their Python SDKs ask for: tools/engine/build.sh installs ours at these.
PROGRAM_PROVIDERS = ("libvirt", "command", "random")
PROVIDER_VERSIONS = {"libvirt": "0.5.4", "command": "1.2.1", "random": "4.21.4"}
PLUGINS = ENGINE / "home" / "plugins"


def engine_missing() -> str | None:
    """Why the engine cannot be used, or None."""
    for name in ("pulumi", "pulumi-language-python"):
        if not os.access(BIN / name, os.X_OK):
            return f"{BIN / name} not built: run `make engine` (bash tools/engine/build.sh)"
    if not (VENV / "bin" / "python").exists():
        return f"no project virtualenv at {VENV}: run `make venv`"
    return None


def provider_missing(*names: str) -> str | None:
    """Why one of the provider plugins `pulumi-resource-NAME` is unavailable, or None."""
    reasons = []
    for name in names:
        piece = f"pulumi-resource-{name}"
        if os.access(PLUGINS / f"resource-{name}-v{PROVIDER_VERSIONS[name]}" / piece, os.X_OK):
            continue
        reasons.append(f"{piece} not installed in {PLUGINS}: run `make engine`")
    return " | ".join(reasons) or None


def require_engine() -> None:
    why = engine_missing()
    if why:
        pytest.skip(why)


def require_providers(*names: str) -> None:
    require_engine()
    why = provider_missing(*names)
    if why:
        pytest.skip(why)


@dataclass
class Pulumi:
    """The real CLI with its own PULUMI_HOME and file backend, run in `cwd`."""

    cwd: Path
    home: Path
    backend: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.update({
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PULUMI_HOME": str(self.home),
            "PULUMI_BACKEND_URL": f"file://{self.backend}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "NO_COLOR": "1",
        })
        env.update(self.extra_env)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 300,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(BIN / "pulumi"), "--non-interactive", "--color", "never", *args],
            cwd=self.cwd, env=self.env, text=True, capture_output=True, timeout=timeout, input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


PulumiFactory = Callable[..., Pulumi]


@pytest.fixture
def pulumi_in(tmp_path: Path) -> Iterator[PulumiFactory]:
    """`pulumi_in(project_dir)`: the real CLI on a fresh backend and home under tmp_path."""
    require_engine()
    home = tmp_path / "pulumi-home"
    backend = tmp_path / "backend"
    home.mkdir()
    backend.mkdir()
    if PLUGINS.is_dir():  # the plugins `make engine` installed, shared read-only
        os.symlink(PLUGINS, home / "plugins")

    def make(cwd: Path, extra_env: Mapping[str, str] | None = None) -> Pulumi:
        return Pulumi(cwd=cwd, home=home, backend=backend, extra_env=dict(extra_env or {}))

    yield make


def copy_project(dest: Path, stacks: Sequence[str] = ()) -> Path:
    """A copy of the MAC project (program, components, chosen stack files) using the repo's venv."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("__main__.py", "Pulumi.yaml"):
        shutil.copy2(REPO / name, dest / name)
    for tree in ("components", "app"):
        shutil.copytree(REPO / tree, dest / tree, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "stacks").mkdir(exist_ok=True)
    for stack in stacks:
        shutil.copy2(REPO / "stacks" / f"Pulumi.{stack}.yaml", dest / "stacks" / f"Pulumi.{stack}.yaml")
    os.symlink(VENV, dest / ".venv")
    return dest


# The ci stack's hosts; dev/prod previews map their hosts onto these too.
LOCAL_HOSTS = ("h1", "h2", "h3", "spare1")
TEST_BRIDGE = "virbr-mac"  # the ci stack's network.bridge


@pytest.fixture(scope="session")
def libvirt_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Host]]:
    """Four local libvirtd hosts (own sockets, run/state dirs, qemu.conf, network namespace with
    the bridge the ci stack's domains plug into) for the whole session. Stopped by PID at the end."""
    why = hypervisor_missing()
    if why:
        pytest.skip(why)
    with local_hosts(tmp_path_factory.mktemp("hosts"), LOCAL_HOSTS, TEST_BRIDGE) as hosts:
        yield hosts
