"""The watchdog's deploy path (watchdog/deploy.py + watchdog/state.py) against the REAL Pulumi CLI,
through the Automation API: stack select, export, prune a dead host's provider and what is bound
to it, import, up. The program is a small provider-free one (see test_engine_basics); the dead
host's resources are put into the state by `stack import`, which loads no plugin, exactly like a
state left behind by a host that died.

`test_host_failover_against_real_cli_and_libvirt` runs the whole remediation on the ci stack
with our plugins and four local libvirtds: h1's libvirtd is stopped (its provider cannot
connect), the watchdog plans the failover, prunes h1 from the state the real engine wrote,
rewrites the stack file and runs `up`, which recreates h1's nodes on the spare.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from components import naming
from components.stack_file import load_topology, stack_path, write_topology
from components.topology import Host, Role, Topology
from tests.engine.conftest import (
    ENGINE,
    PASSPHRASE,
    PROGRAM_PROVIDERS,
    PulumiFactory,
    copy_project,
    provider_missing,
    require_providers,
)
from tests.engine.test_engine_basics import write_project
from tests.engine.test_mac_program import point_hosts_at
from vmsite import hypervisor
from watchdog.alert import Alerter
from watchdog.deploy import Deployer
from watchdog.detect import Failures
from watchdog.errors import DeployFailed
from watchdog.fence import FenceResult
from watchdog.journal import Journal
from watchdog.plan import Step, plan
from watchdog.remediate import Remediator
from watchdog.state import prune_hosts, urn_name

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


def test_host_failover_against_real_cli_and_libvirt(
        tmp_path: Path, pulumi_in: PulumiFactory,
        libvirt_hosts: dict[str, hypervisor.Host]) -> None:
    require_providers(*PROGRAM_PROVIDERS)
    project = copy_project(tmp_path / "mac", stacks=["ci"])
    path = stack_path(project, "ci")
    point_hosts_at(project, "ci", libvirt_hosts)
    topo = load_topology(path)
    hypervisor.tiny_qcow2(Path(topo.image_of(Role.MYSQL).source))
    p = pulumi_in(project)
    p.run("stack", "init", "ci")
    dead = libvirt_hosts["h1"]
    env = {k: v for k, v in p.env.items() if k.startswith("PULUMI_")}
    output: list[str] = []
    deployer = Deployer(project, "ci", pulumi_root=ENGINE, env=env, lock_retries=0,
                        on_output=output.append)
    try:
        assert deployer.up(message="engine test: first up") == "succeeded"
        on_h1 = {n.name for n in topo.nodes_on("h1")}
        assert on_h1 == {"db1", "web1"} and on_h1 <= dead.domains()

        dead.stop()  # h1 dies: libvirtd, virtlogd and its guests are gone

        # The pruning, on the state the real engine wrote: h1's provider and exactly what is
        # bound to it, found by the names the program gave them (components.naming).
        state = deployer.export_state()
        result = prune_hosts(state["deployment"], [topo.hosts["h1"]])
        expected = {naming.host_provider("h1"), naming.host_component("h1"), naming.host_pool("h1"),
                    naming.host_base_image("h1")}
        for node in on_h1:
            expected |= {naming.vm_component(node), naming.vm_root_volume(node),
                         naming.vm_cloud_init(node), naming.vm_domain(node)}
        assert {urn_name(u) for u in result.removed} == expected

        # Without pruning, an up that moves h1's nodes must delete them through h1's provider,
        # which cannot connect: it fails and names the host's URI.
        failover = plan(topo, Failures(hosts=("h1",)), manual=True)
        assert {m.node for m in failover.moves} == on_h1
        write_topology(path, failover.topology)
        output.clear()
        with pytest.raises(DeployFailed) as failed_up:
            deployer.up(message="engine test: up without pruning")
        streamed = "\n".join(output)
        assert f"cannot connect to libvirt at {dead.uri}" in streamed, streamed[-3000:]
        assert f"cannot connect to libvirt at {dead.uri}" in str(failed_up.value)  # the line why
        write_topology(path, topo)  # back to the stack file the watchdog finds

        fenced: list[str] = []

        def fencer(host: Host, timeout_s: float) -> FenceResult:
            fenced.append(host.name)
            dead.stop()  # "power off": already off
            return FenceResult(host.name, skipped=False, returncode=0)

        def verifier(t: Topology, nodes: Sequence[str], timeout_s: float) -> list[str]:
            # The tiny image boots no OS: a node counts as up when its domain runs on its host.
            return [n for n in nodes
                    if libvirt_hosts[t.nodes[n].host].virsh("domstate", n, check=False)
                    .stdout.strip() != "running"]

        state_dir = tmp_path / "watchdog"
        journal = Journal(state_dir)
        remediator = Remediator(stack_file=path, state_dir=state_dir, backend=deployer,
                                journal=journal, alerter=Alerter(None, "ci"), verifier=verifier,
                                fencer=fencer, up_attempts=1)
        outcome = remediator.execute(failover, trigger="engine test: h1 stopped")
        assert outcome.ran == (Step.FENCE, Step.PRUNE_STATE, Step.WRITE_CONFIG, Step.UP, Step.VERIFY)
        assert fenced == ["h1"]

        rewritten = load_topology(path)
        assert rewritten.failed_hosts == ("h1",) or "h1" in rewritten.failed_hosts
        assert {rewritten.nodes[n].host for n in on_h1} == {"spare1"}
        assert on_h1 <= libvirt_hosts["spare1"].domains()
        after = json.dumps(deployer.export_state()["deployment"]["resources"])
        assert "::h1-pool" not in after and "pulumi:providers:libvirt::h1" not in after
        p.run("up", "--stack", "ci", "--yes", "--expect-no-changes")
    finally:
        p.run("destroy", "--stack", "ci", "--yes", "--skip-preview", check=False, timeout=900)
        if not dead.running():
            dead.start()
        dead.wipe()
    for host in libvirt_hosts.values():
        assert not host.domains(), host.name
