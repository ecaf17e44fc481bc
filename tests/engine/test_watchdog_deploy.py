"""The watchdog's deploy path (watchdog/deploy.py + watchdog/state.py) against the REAL Pulumi CLI,
through the Automation API: stack select, export, prune a dead host's provider and what is bound
to it, import, up. The program is a small provider-free one (see test_engine_basics); the dead
host's resources are put into the state by `stack import`, which loads no plugin, exactly like a
state left behind by a host that died.

The full remediation (fence, prune, stack file rewrite, `up` of the MAC program on the local
libvirtd, verify) needs the libvirt provider plugin: `test_remediation_against_real_cli_and_libvirt`
is the placeholder that the watchdog work fills once `make engine` can build the providers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from components.topology import Host
from tests.engine.conftest import ENGINE, PASSPHRASE, PulumiFactory, provider_missing
from tests.engine.test_engine_basics import write_project
from watchdog.deploy import Deployer
from watchdog.errors import DeployFailed
from watchdog.state import prune_hosts

pytestmark = pytest.mark.engine

DEAD = Host("kvm9", "qemu+ssh://root@10.9.9.9/system", "10.9.9.9")
PROVIDER_ID = "5e0a7b9c-0000-4000-8000-000000000009"


def dead_host_resources(stack: str, project: str) -> list[dict]:
    """What a libvirt host leaves in a state: its provider, pool, and a VM component's disk."""
    prefix = f"urn:pulumi:{stack}::{project}::"
    provider = f"{prefix}pulumi:providers:libvirt::kvm9"
    pool = f"{prefix}libvirt:index/pool:Pool::kvm9-pool"
    vm = f"{prefix}mac:index:Vm::db9"
    root = f"{prefix}mac:index:Vm$libvirt:index/volume:Volume::db9-root"
    uri = {"uri": DEAD.uri}
    return [
        {"urn": provider, "custom": True, "id": PROVIDER_ID, "type": "pulumi:providers:libvirt",
         "inputs": uri, "outputs": uri},
        {"urn": pool, "custom": True, "id": "pool-uuid-9", "type": "libvirt:index/pool:Pool",
         "provider": f"{provider}::{PROVIDER_ID}", "inputs": {"name": "mac-kvm9"},
         "outputs": {"name": "mac-kvm9"}},
        {"urn": vm, "custom": False, "type": "mac:index:Vm"},
        {"urn": root, "custom": True, "id": "/var/lib/libvirt/mac/db9-root.qcow2",
         "type": "libvirt:index/volume:Volume", "parent": vm,
         "provider": f"{provider}::{PROVIDER_ID}", "dependencies": [pool],
         "inputs": {"pool": "mac-kvm9"}, "outputs": {"pool": "mac-kvm9"}},
    ]


@pytest.fixture
def deployer(tmp_path: Path, pulumi_in: PulumiFactory) -> Deployer:
    p = pulumi_in(write_project(tmp_path / "proj"))
    p.run("stack", "init", "wd")
    p.run("config", "set", "boxes", "1")
    p.run("config", "set", "greeting", "hi")
    p.run("config", "set", "--path", "nested.hosts.kvm1.uri", "qemu:///system")
    p.run("config", "set", "--secret", "token", "tok")
    env = {k: v for k, v in p.env.items() if k.startswith("PULUMI_")}
    env["PULUMI_CONFIG_PASSPHRASE"] = PASSPHRASE
    return Deployer(p.cwd, "wd", pulumi_root=ENGINE, env=env, lock_retries=0,
                    on_output=lambda line: None)


def test_deployer_up_export_import_with_real_cli(deployer: Deployer) -> None:
    assert deployer.up(message="engine test") == "succeeded"
    state = deployer.export_state()
    urns = [r["urn"] for r in state["deployment"]["resources"]]
    assert any(u.endswith("::box0") for u in urns)
    deployer.import_state(state)
    assert deployer.export_state()["deployment"]["resources"] == state["deployment"]["resources"]


def test_prune_dead_host_then_up_with_real_cli(deployer: Deployer) -> None:
    assert deployer.up() == "succeeded"
    state = deployer.export_state()
    dead = dead_host_resources("wd", "enginecheck")
    broken = copy.deepcopy(state)
    broken["deployment"]["resources"].extend(dead)
    deployer.import_state(broken)
    exported = deployer.export_state()
    assert {r["urn"] for r in dead} <= {r["urn"] for r in exported["deployment"]["resources"]}

    if provider_missing("libvirt") is not None:
        # Without pruning, `up` must touch the dead host's resources and fails (here already at
        # loading the libvirt plugin; with the plugin, at configuring it against a dead host).
        with pytest.raises(DeployFailed):
            deployer.up()

    result = prune_hosts(exported["deployment"], [DEAD])
    assert set(result.removed) == {r["urn"] for r in dead}
    deployer.import_state({"version": exported["version"], "deployment": result.deployment})
    after = deployer.export_state()
    assert not {r["urn"] for r in dead} & {r["urn"] for r in after["deployment"]["resources"]}
    assert deployer.up() == "succeeded"


def test_remediation_against_real_cli_and_libvirt() -> None:
    """PLACEHOLDER for the watchdog work: a host of the ci stack 'dies' (its libvirt provider URI
    is made unreachable), the watchdog fences it, prunes its provider from the state, moves its
    nodes to the spare in stacks/Pulumi.ci.yaml and runs `up` through the Automation API against
    the real CLI and the local libvirtd; then the moved domains exist on the spare's pool."""
    why = provider_missing("libvirt", "command", "random")
    pytest.skip("placeholder for the watchdog's end-to-end remediation against the real CLI; "
                + (f"blocked: {why}" if why else "to be written by the watchdog work"))
