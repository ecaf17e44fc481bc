"""Our plugins over SSH, against a throw-away sshd on 127.0.0.1 with a non-standard port.

- libvirt: a provider on `qemu+ssh://root@127.0.0.1:PORT/system?socket=...&keyfile=...&no_verify=1`
  (the port honoured; pulumi-libvirt 0.5.4 could not) creates a pool and a volume on a local
  libvirtd host through the SSH tunnel.
- command: `remote:Command` with a private key, a secret stdin and environment; a command that
  exits non-zero fails the update with its stderr, and the secret never shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import PulumiFactory, require_providers
from tests.engine.test_engine_basics import write_project
from vmsite import sshd
from vmsite.hypervisor import Host

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def local_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd.Sshd]:
    why = sshd.missing()
    if why:
        pytest.skip(why)
    server = sshd.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def test_libvirt_over_qemu_ssh_with_a_port(tmp_path: Path, pulumi_in: PulumiFactory,
                                           libvirt_hosts: dict[str, Host],
                                           local_sshd: sshd.Sshd) -> None:
    require_providers("libvirt")
    host = libvirt_hosts["h2"]
    uri = (f"qemu+ssh://root@127.0.0.1:{local_sshd.port}/system?socket={host.socket}"
           f"&keyfile={local_sshd.key}&no_verify=1")
    pool_dir = host.pool_root / "over-ssh"
    program = f"""import pulumi, pulumi_libvirt as lv
p = lv.Provider("h2-ssh", uri={uri!r})
on = pulumi.ResourceOptions(provider=p)
pool = lv.Pool("pool", name="over-ssh", type="dir", target=lv.PoolTargetArgs(path={str(pool_dir)!r}), opts=on)
vol = lv.Volume("vol", name="v.qcow2", pool=pool.name, size=16 * 1024 * 1024, format="qcow2", opts=on)
pulumi.export("vol", vol.id)
"""
    p = pulumi_in(write_project(tmp_path / "ssh", program))
    p.run("stack", "init", "ssh")
    try:
        p.run("up", "--yes", "--skip-preview")
        assert "v.qcow2" in host.virsh("vol-list", "over-ssh").stdout
        vol = json.loads(p.run("stack", "output", "--json").stdout)["vol"]
        assert vol == str(pool_dir / "v.qcow2")
        p.run("up", "--yes", "--expect-no-changes")
    finally:
        p.run("destroy", "--yes", "--skip-preview", check=False)
    assert "over-ssh" not in host.virsh("pool-list", "--all", "--name").stdout


def test_remote_command_with_key_secret_stdin_and_failure(tmp_path: Path, pulumi_in: PulumiFactory,
                                                          local_sshd: sshd.Sshd) -> None:
    require_providers("command")
    marker = tmp_path / "ran"
    program = f"""import pulumi, pulumi_command as command
conn = command.remote.ConnectionArgs(host="127.0.0.1", port={local_sshd.port}, user="root",
    private_key=pulumi.Output.secret({local_sshd.private_key!r}), dial_error_limit=3, per_dial_timeout=5)
cfg = pulumi.Config()
ok = command.remote.Command("ok", connection=conn,
    create='read pw; echo "len=${{#pw}} env=$MAC_GREETING"; touch {marker}',
    stdin=pulumi.Output.secret("hunter2-very-secret\\n"),
    environment={{"MAC_GREETING": "hello", "OTHER_VAR": "x y"}},
    triggers=[cfg.get("trigger") or "1"])
pulumi.export("out", ok.stdout)
if cfg.get_bool("fail"):
    command.remote.Command("bad", connection=conn, create="echo broken-on-purpose >&2; exit 7",
        opts=pulumi.ResourceOptions(depends_on=[ok]))
"""
    p = pulumi_in(write_project(tmp_path / "cmd", program))
    p.run("stack", "init", "cmd")
    try:
        p.run("up", "--yes", "--skip-preview")
        assert marker.exists()
        assert json.loads(p.run("stack", "output", "--json").stdout)["out"] == "[secret]"
        out = json.loads(p.run("stack", "output", "--json", "--show-secrets").stdout)["out"]
        assert out == "len=19 env=hello"
        assert "hunter2" not in p.run("stack", "export").stdout
        p.run("up", "--yes", "--expect-no-changes")
        p.run("config", "set", "trigger", "2")
        preview = json.loads(p.run("preview", "--json").stdout)
        assert any(s["op"] == "replace" for s in preview["steps"]
                   if s["urn"].endswith("::ok")), preview["steps"]
        p.run("config", "set", "fail", "true")
        proc = p.run("up", "--yes", "--skip-preview", check=False)
        text = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "exited 7" in text and "broken-on-purpose" in text, text
        assert "hunter2" not in text
    finally:
        p.run("config", "set", "fail", "false")
        p.run("destroy", "--yes", "--skip-preview", check=False)
