"""The real engine with the Python language host on a small program that needs no provider plugin:
preview, up, outputs (plain, structured and secret config), a no-op second up, a change, a
program error, destroy. This is the part of `pulumi up` that every MAC deployment goes through
before any provider is involved."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.engine.conftest import BIN, VENV, Pulumi, PulumiFactory

pytestmark = pytest.mark.engine

PROGRAM = textwrap.dedent("""\
    import pulumi


    class Box(pulumi.ComponentResource):
        def __init__(self, name, size, opts=None):
            super().__init__("mac:test:Box", name, None, opts)
            self.size = pulumi.Output.from_input(size)
            self.register_outputs({"size": self.size})


    cfg = pulumi.Config()
    if cfg.get_bool("fail"):
        raise ValueError("boom-from-the-program")
    boxes = [Box(f"box{i}", i) for i in range(cfg.require_int("boxes"))]
    nested = cfg.require_object("nested")
    pulumi.export("count", len(boxes))
    pulumi.export("sizes", [b.size for b in boxes])
    pulumi.export("greeting", cfg.require("greeting"))
    pulumi.export("nested_hosts", sorted(nested["hosts"]))
    pulumi.export("token_length", cfg.require_secret("token").apply(len))
    pulumi.export("where", {"project": pulumi.get_project(), "stack": pulumi.get_stack()})
    """)


def write_project(root: Path, program: str = PROGRAM) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Pulumi.yaml").write_text(textwrap.dedent(f"""\
        name: enginecheck
        runtime:
          name: python
          options:
            toolchain: pip
            virtualenv: {VENV}
        """))
    (root / "__main__.py").write_text(program)
    return root


def failed_preview(p: Pulumi, stack: str) -> str:
    """Init `stack` and preview it; the preview must fail: its output."""
    p.run("stack", "init", stack)
    proc = p.run("preview", check=False)
    assert proc.returncode != 0
    return proc.stdout + proc.stderr


@pytest.fixture
def project(tmp_path: Path, pulumi_in: PulumiFactory) -> Pulumi:
    p = pulumi_in(write_project(tmp_path / "proj"))
    p.run("stack", "init", "t1")
    p.run("config", "set", "boxes", "2")
    p.run("config", "set", "greeting", "hello engine")
    p.run("config", "set", "--path", "nested.hosts.kvm1.uri", "qemu:///system")
    p.run("config", "set", "--path", "nested.hosts.kvm2.uri", "qemu:///system")
    p.run("config", "set", "--secret", "token", "s3cr3t-value")
    return p


def test_cli_version_and_language_host_are_ours() -> None:
    from tests.engine.conftest import require_engine

    require_engine()
    version = subprocess.run([str(BIN / "pulumi"), "version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    assert version == "v3.274.1"


def test_preview_up_noop_change_destroy(project: Pulumi) -> None:
    preview = project.run("preview", "--diff")
    assert "boom" not in preview.stdout
    assert "+ 3 to create" in preview.stdout or "3 to create" in preview.stdout, preview.stdout

    project.run("up", "--yes", "--skip-preview")
    outputs = project.json("stack", "output", "--show-secrets")
    assert outputs == {
        "count": 2,
        "sizes": [0, 1],
        "greeting": "hello engine",
        "nested_hosts": ["kvm1", "kvm2"],
        "token_length": 12,
        "where": {"project": "enginecheck", "stack": "t1"},
    }
    # The secret stays a secret in the state and in plain `stack output`.
    assert project.json("stack", "output")["token_length"] == "[secret]"
    exported = project.run("stack", "export").stdout
    assert "s3cr3t-value" not in exported

    # Same config: nothing to do.
    project.run("up", "--yes", "--expect-no-changes")

    # One more box: exactly one create.
    project.run("config", "set", "boxes", "3")
    change = project.run("preview", "--json")
    steps = json.loads(change.stdout)["steps"]
    creates = [s["urn"] for s in steps if s["op"] == "create"]
    assert len(creates) == 1 and creates[0].endswith("::box2"), steps
    project.run("up", "--yes")
    assert project.json("stack", "output")["count"] == 3

    project.run("destroy", "--yes")
    resources = json.loads(project.run("stack", "export").stdout)["deployment"].get("resources") or []
    assert resources == []
    project.run("stack", "rm", "--yes")


def test_program_error_reaches_the_user(project: Pulumi) -> None:
    project.run("config", "set", "fail", "true")
    proc = project.run("up", "--yes", "--skip-preview", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "boom-from-the-program" in out
    assert "ValueError" in out


def test_missing_provider_plugin_is_named(tmp_path: Path, pulumi_in: PulumiFactory) -> None:
    """The language host reports the providers the program's packages need (pulumi-plugin.json),
    and with downloads disabled the engine names the one it cannot find (here: a PULUMI_HOME
    without the plugins `make engine` installed)."""
    program = "import pulumi_random\npulumi_random.RandomPet('pet')\n"
    p = pulumi_in(write_project(tmp_path / "needs-random", program))
    (p.home / "plugins").unlink(missing_ok=True)
    out = failed_preview(p, "t2")
    assert "random" in out and "plugin" in out, out
    assert "Traceback" not in out, out


def test_unimplemented_resource_type_is_named(tmp_path: Path, pulumi_in: PulumiFactory) -> None:
    """Our random plugin implements RandomPassword only: anything else fails with its name."""
    from tests.engine.conftest import require_providers

    require_providers("random")
    program = "import pulumi_random\npulumi_random.RandomPet('pet')\n"
    p = pulumi_in(write_project(tmp_path / "pet", program))
    out = failed_preview(p, "t3")
    assert "random:index/randomPet:RandomPet is not implemented" in out, out


def test_random_password_secret_and_unsupported_input(tmp_path: Path, pulumi_in: PulumiFactory) -> None:
    """RandomPassword through the real engine: result is secret in state and outputs; an input
    our plugin does not implement is refused by name."""
    from tests.engine.conftest import require_providers

    require_providers("random")
    program = ("import pulumi, pulumi_random\n"
               "pw = pulumi_random.RandomPassword('pw', length=24, special=False)\n"
               "pulumi.export('pw', pw.result)\n")
    p = pulumi_in(write_project(tmp_path / "pw", program))
    p.run("stack", "init", "t4")
    p.run("up", "--yes", "--skip-preview")
    out = json.loads(p.run("stack", "output", "--json").stdout)
    assert out["pw"] == "[secret]"
    secret = json.loads(p.run("stack", "output", "--json", "--show-secrets").stdout)["pw"]
    assert len(secret) == 24 and secret.isalnum()
    assert secret not in p.run("stack", "export").stdout
    p.run("up", "--yes", "--expect-no-changes")
    p.run("destroy", "--yes")


def test_unimplemented_libvirt_input_is_named(tmp_path: Path, pulumi_in: PulumiFactory) -> None:
    """An input of the published schema that our libvirt plugin does not implement is refused by
    name in preview (never silently ignored); the host is never dialled for that."""
    from tests.engine.conftest import require_providers

    require_providers("libvirt")
    program = ("import pulumi, pulumi_libvirt as lv\n"
               "p = lv.Provider('h', uri='qemu+unix:///system?socket=/nonexistent/libvirt-sock')\n"
               "lv.Domain('d', name='d', description='x', opts=pulumi.ResourceOptions(provider=p))\n")
    p = pulumi_in(write_project(tmp_path / "description", program))
    out = failed_preview(p, "t5")
    assert 'input "description" is not implemented by MAC\'s libvirt provider' in out, out
    assert "cannot connect" not in out, out
