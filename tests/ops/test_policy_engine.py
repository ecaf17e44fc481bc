"""The policy pack run for real: `pulumi preview --policy-pack policy` with the CLI and our Python
language host from `make engine` (RunPlugin starts the pack with the project's virtualenv).

The first test needs only the engine (a provider-free program, which the spare-host policy must
refuse: no host at all); the second previews the MAC program's ci stack and needs the provider
plugins too. Each skips, naming the missing piece, like tests/engine.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from tests.engine.conftest import (
    PLUGINS,
    PROGRAM_PROVIDERS,
    REPO,
    Pulumi,
    copy_project,
    require_engine,
    require_providers,
)

pytestmark = pytest.mark.engine
POLICY = REPO / "policy"


def pulumi(tmp_path: Path, project: Path) -> Pulumi:
    home, backend = tmp_path / "home", tmp_path / "backend"
    home.mkdir()
    backend.mkdir()
    if PLUGINS.is_dir():  # the plugins `make engine` installed, shared read-only
        os.symlink(PLUGINS, home / "plugins")
    return Pulumi(cwd=project, home=home, backend=backend)


def test_a_violation_fails_the_preview_and_names_the_policy(tmp_path: Path) -> None:
    require_engine()
    project = tmp_path / "hostless"
    project.mkdir()
    (project / "Pulumi.yaml").write_text(textwrap.dedent(f"""\
        name: hostless
        runtime:
          name: python
          options: {{toolchain: pip, virtualenv: {REPO / '.venv'}}}
        """))
    (project / "__main__.py").write_text("import pulumi\n\npulumi.export('hosts', 0)\n")
    p = pulumi(tmp_path, project)
    p.run("stack", "init", "t")
    proc = p.run("preview", "--stack", "t", "--policy-pack", str(POLICY), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Loading policy packs...: done" in out, out
    assert f"mac@v0.1.0 (local: {POLICY})" in out, out
    assert "[mandatory]  mac-spare-host" in out, out
    assert "no spare host: every one of the 0 host providers (none) runs a domain" in out, out
    for other in ("mac-role-anti-affinity", "mac-no-autostart", "mac-no-clear-secrets-in-user-data"):
        assert other not in out, out


def test_the_mac_program_passes_the_pack(tmp_path: Path) -> None:
    """The ci stack: nothing exists yet, so the lazy providers contact no libvirtd in a preview."""
    require_providers(*PROGRAM_PROVIDERS)
    project = copy_project(tmp_path / "mac", stacks=["ci"])
    p = pulumi(tmp_path, project)
    p.run("stack", "init", "ci")
    proc = p.run("preview", "--stack", "ci", "--policy-pack", str(POLICY), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"✅ mac@v0.1.0 (local: {POLICY})" in out, out
    assert "[mandatory]" not in out, out

    # Every host given a node: the model accepts it, the pack does not.
    stack_file = project / "stacks" / "Pulumi.ci.yaml"
    text = stack_file.read_text()
    for old, new in (("mac:spares: [spare1]", "mac:spares: []"),
                     ("lb1: {role: lb, host: h3", "lb1: {role: lb, host: spare1"),
                     ("web2: {role: web, host: h2", "web2: {role: web, host: h3")):
        assert old in text
        text = text.replace(old, new)
    stack_file.write_text(text)
    proc = p.run("preview", "--stack", "ci", "--policy-pack", str(POLICY), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "[mandatory]  mac-spare-host" in out, out
    assert "every one of the 4 host providers (h1, h2, h3, spare1) runs a domain" in out, out


def test_the_pack_s_virtualenv_is_the_project_s() -> None:
    """PulumiPolicy.yaml points at ../.venv, where `make venv` installs pulumi-policy."""
    text = (POLICY / "PulumiPolicy.yaml").read_text()
    assert "virtualenv: ../.venv" in text
    assert os.path.exists(REPO / ".venv" / "bin" / "python")
