"""The Pulumi program under mocks, for the dev and prod stacks."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pulumi
import pytest
import yaml  # PyYAML: the YAML 1.1 loader cloud-init itself uses
from pulumi.runtime.rpc import is_rpc_secret

from components import roles
from components.host import HypervisorHost
from components.roles.lb import HAPROXY_CFG
from components.stack_file import load_topology, stack_path
from components.topology import Role, Topology
from components.vm import GIB, mac_address
from tests.unit.harness import PROJECT_DIR, STACKS, Evaluation, evaluate, stack_config, walk_plain

PROVIDER = "pulumi:providers:libvirt"
POOL = "libvirt:index/pool:Pool"
VOLUME = "libvirt:index/volume:Volume"
CLOUD_INIT = "libvirt:index/cloudInitDisk:CloudInitDisk"
DOMAIN = "libvirt:index/domain:Domain"
COMMAND = "command:remote:Command"
PASSWORD = "random:index/randomPassword:RandomPassword"
SSH_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"


def topology_of(e: Evaluation) -> Topology:
    topology = e.program["config"].topology
    assert isinstance(topology, Topology)
    return topology


def provider_urn(e: Evaluation, host: str) -> str:
    return e.one(PROVIDER, host).urn


def vm_resources(e: Evaluation, node: str) -> dict[str, Any]:
    return {
        "volume": e.one(VOLUME, f"{node}-root"),
        "cloud_init": e.one(CLOUD_INIT, f"{node}-cloud-init"),
        "domain": e.one(DOMAIN, f"{node}-domain"),
    }


def passwords(e: Evaluation) -> list[str]:
    return [e.secrets.db_root_password, e.secrets.db_app_password]


def user_data(e: Evaluation, node: str) -> str:
    value = e.one(CLOUD_INIT, f"{node}-cloud-init").plain("userData")
    assert isinstance(value, str)
    return value


# --- what exists --------------------------------------------------------------------------


def test_resource_counts(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    hosts, nodes = len(t.live_hosts), len(t.nodes)
    counts = Counter(r.type for r in evaluation.resources)
    assert counts["mac:index:MediumAvailabilityCluster"] == 1
    assert counts["mac:index:HypervisorHost"] == hosts
    assert counts["mac:index:Vm"] == nodes
    assert counts[PROVIDER] == hosts
    assert counts[POOL] == hosts
    assert counts[VOLUME] == hosts + nodes  # a base image per host + a root volume per node
    assert counts[CLOUD_INIT] == nodes
    assert counts[DOMAIN] == nodes
    assert counts[PASSWORD] == 2  # the stack files hold no secrets: both DB passwords generated
    assert counts[COMMAND] == len(roles.post_boot_steps(t)) > 0


def test_spares_are_warm(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    assert t.spares
    for spare in t.spares:
        urn = provider_urn(evaluation, spare)
        assert evaluation.one(POOL, f"{spare}-pool").provider_urn == urn
        assert evaluation.one(VOLUME, f"{spare}-base-image").provider_urn == urn
        assert not t.nodes_on(spare)


def test_program_reads_the_same_topology_as_the_stack_file(evaluation: Evaluation) -> None:
    """Pulumi config (get_object per key) and the watchdog's stack file reader agree."""
    from_file = load_topology(stack_path(PROJECT_DIR, evaluation.stack))
    assert topology_of(evaluation) == from_file
    if evaluation.stack == "prod":  # sizes from mac:sizes reach the domains
        db1 = evaluation.one(DOMAIN, "db1-domain").inputs
        assert (db1["vcpu"], db1["memory"]) == (4, 8192)


def test_component_tree(evaluation: Evaluation) -> None:
    cluster = evaluation.of_type("mac:index:MediumAvailabilityCluster")[0]
    for r in evaluation.resources:
        if r.type in ("mac:index:HypervisorHost", "mac:index:Vm", COMMAND):
            assert r.parent == cluster.urn, r.name
        elif r.type in (PROVIDER, POOL) or r.name.endswith("-base-image"):
            assert evaluation.by_urn(r.parent).type == "mac:index:HypervisorHost", r.name
        elif r.type in (VOLUME, CLOUD_INIT, DOMAIN):
            assert evaluation.by_urn(r.parent).type == "mac:index:Vm", r.name


def test_exports(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    lb = t.nodes_of(Role.LB)[0]
    assert evaluation.outputs["lb_url"] == f"http://{lb.ip}/"
    assert evaluation.outputs["nodes"] == {
        n.name: {"role": n.role.value, "host": n.host, "ip": n.ip, "health_url": t.health_url(n)}
        for n in t.nodes.values()
    }


# --- placement: every VM resource on its node's host -------------------------------------


def test_every_libvirt_resource_has_an_explicit_provider(evaluation: Evaluation) -> None:
    for r in evaluation.resources:
        if r.type.startswith("libvirt:"):
            assert r.provider_urn.startswith("urn:pulumi:"), f"{r.name} uses the default provider"


def test_providers_point_at_their_hosts(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for host in t.live_hosts:
        assert evaluation.one(PROVIDER, host).inputs["uri"] == t.hosts[host].uri


def test_vm_resources_bound_to_node_host_provider(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for node in t.nodes.values():
        expected = provider_urn(evaluation, node.host)
        for kind, r in vm_resources(evaluation, node.name).items():
            assert r.provider_urn == expected, f"{node.name} {kind} is not on {node.host}"
            assert expected in r.provider


@pytest.mark.parametrize("role", [Role.MYSQL, Role.WEB])
def test_role_nodes_on_distinct_host_providers(evaluation: Evaluation, role: Role) -> None:
    t = topology_of(evaluation)
    providers = [evaluation.one(DOMAIN, f"{n.name}-domain").provider_urn for n in t.nodes_of(role)]
    assert len(providers) >= 2
    assert len(set(providers)) == len(providers)


def test_root_volume_clones_its_host_base_image(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for node in t.nodes.values():
        volume = vm_resources(evaluation, node.name)["volume"]
        assert volume.inputs["baseVolumeId"] == f"{node.host}-base-image-id"
        assert volume.inputs["pool"] == evaluation.one(POOL, f"{node.host}-pool").inputs["name"]
        assert volume.inputs["size"] == t.size_of(node.role).disk_gib * GIB


# --- domains ------------------------------------------------------------------------------


def test_domains(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for node in t.nodes.values():
        res = vm_resources(evaluation, node.name)
        domain = res["domain"].inputs
        size = t.size_of(node.role)
        assert domain["autostart"] is False
        assert domain["qemuAgent"] is True
        assert (domain["vcpu"], domain["memory"]) == (size.vcpu, size.memory_mib)
        assert domain["cloudinit"] == f"{node.name}-cloud-init-id"
        assert domain["disks"] == [{"volumeId": f"{node.name}-root-id"}]
        (nic,) = domain["networkInterfaces"]
        assert nic["bridge"] == t.network.bridge
        assert nic["mac"] == mac_address(node.name)
        assert not nic.get("waitForLease")


def test_macs_are_stable_and_unique() -> None:
    names = [f"web{i}" for i in range(500)]
    assert len({mac_address(n) for n in names}) == len(names)
    assert mac_address("db1") == mac_address("db1")
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac_address("db1"))


# --- cloud-init ---------------------------------------------------------------------------


def test_network_config_has_the_static_ip(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for node in t.nodes.values():
        disk = vm_resources(evaluation, node.name)["cloud_init"].inputs
        config = yaml.safe_load(disk["networkConfig"])  # as cloud-init reads it (YAML 1.1)
        assert config["version"] == 2
        (nic,) = config["ethernets"].values()
        assert nic["match"] == {"macaddress": mac_address(node.name)}
        assert nic["addresses"] == [f"{node.ip}/{t.network.prefix_len}"]
        assert nic["routes"] == [{"to": "default", "via": t.network.gateway}]
        assert nic["nameservers"]["addresses"] == list(t.network.dns)
        assert nic.get("dhcp4") is False
        meta = yaml.safe_load(disk["metaData"])
        assert meta["local-hostname"] == node.name
        assert meta["instance-id"]


def test_user_data_is_secret_and_holds_the_passwords_only_there(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for node in t.nodes.values():
        disk = vm_resources(evaluation, node.name)["cloud_init"]
        assert is_rpc_secret(disk.inputs["userData"]), node.name
        assert disk.plain("userData").startswith("#cloud-config")
    secret_values = passwords(evaluation)
    assert all(p.startswith("generated-") for p in secret_values)  # RandomPassword's result
    mysql_user_data = user_data(evaluation, topology_of(evaluation).nodes_of(Role.MYSQL)[0].name)
    web_user_data = user_data(evaluation, topology_of(evaluation).nodes_of(Role.WEB)[0].name)
    assert any(p in mysql_user_data + web_user_data for p in secret_values)
    for r in evaluation.resources:
        if r.type == PASSWORD:
            continue
        for value, inside_secret in walk_plain(r.inputs):
            if isinstance(value, str) and any(p in value for p in secret_values):
                assert inside_secret, f"a password leaks in clear into {r.type} {r.name}"


def written_files(text: str) -> dict[str, str]:
    """The `write_files` of a #cloud-config, path -> content (parsed as cloud-init does)."""
    config = yaml.safe_load(text)
    return {f["path"]: f.get("content", "") for f in config.get("write_files", [])}


def test_haproxy_backends_are_the_web_nodes(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for lb in t.nodes_of(Role.LB):
        files = written_files(user_data(evaluation, lb.name))
        config = files[HAPROXY_CFG]
        # The section that health-checks /health.php is the web backend.
        (web_backend,) = [s for s in re.split(r"\n(?=\S)", config) if "GET /health.php" in s]
        servers = re.findall(r"^\s*server\s+(\S+)\s+([\d.]+):(\d+)", web_backend, re.MULTILINE)
        expected = {(w.name, w.ip, "80") for w in t.nodes_of(Role.WEB)}
        assert set(servers) == expected
        assert "option redispatch" in config


def test_galera_cluster_address_lists_both_db_nodes(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    db_ips = {n.ip for n in t.nodes_of(Role.MYSQL)}
    assert len(db_ips) == 2
    for db in t.nodes_of(Role.MYSQL):
        configs = [c for c in written_files(user_data(evaluation, db.name)).values()
                   if "wsrep_cluster_address" in c]
        assert len(configs) == 1, db.name
        match = re.search(r"^\s*wsrep_cluster_address\s*=\s*\"?gcomm://([^\"\s]*)", configs[0], re.MULTILINE)
        assert match, db.name
        addresses = {a.split(":")[0] for a in match.group(1).split(",")}
        assert addresses == db_ips


def test_web_nodes_get_apache_and_the_app(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    for web in t.nodes_of(Role.WEB):
        text = user_data(evaluation, web.name)
        assert {"apache2", "libapache2-mod-php", "php-mysql"} <= set(yaml.safe_load(text)["packages"])
        files = written_files(text)
        apache = [c for p, c in files.items() if p.startswith("/etc/apache2/")]
        assert apache and any("DocumentRoot" in c for c in apache), web.name
        assert any(p.endswith("/health.php") for p in files), web.name


# --- post-boot commands -------------------------------------------------------------------


def test_post_boot_commands(evaluation: Evaluation) -> None:
    t = topology_of(evaluation)
    steps = roles.post_boot_steps(t)
    commands = {r.name: r for r in evaluation.of_type(COMMAND)}
    assert set(commands) == {s.name for s in steps}
    for step in steps:
        cmd = commands[step.name]
        node = t.nodes[step.node]
        domain = evaluation.one(DOMAIN, f"{node.name}-domain")
        assert cmd.deleted_with == domain.urn
        assert domain.urn in cmd.dependencies
        assert cmd.inputs["create"] == step.command_for(first_deploy=True)  # a new stack
        assert not cmd.inputs.get("delete")  # deleting must never need a (maybe dead) VM
        assert cmd.inputs["triggers"] == [f"{node.name}-domain-id"]
        assert is_rpc_secret(cmd.inputs["connection"])
        connection = cmd.plain("connection")
        assert (connection["host"], connection["user"]) == (node.ip, t.ssh_user)
        assert "privateKey" not in connection  # no key configured: the SSH agent is used
        for after in step.after:
            assert commands[after].urn in cmd.dependencies
        if step.stdin is None:
            assert not cmd.inputs.get("stdin")
        else:
            assert is_rpc_secret(cmd.inputs["stdin"]), step.name


def test_some_post_boot_step_carries_a_secret_on_stdin(evaluation: Evaluation) -> None:
    stdins = [c.inputs["stdin"] for c in evaluation.of_type(COMMAND) if c.inputs.get("stdin")]
    assert stdins
    assert all(is_rpc_secret(s) for s in stdins)


# --- config variants (fresh evaluations) --------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_configured_secrets_are_used_and_stay_secret(stack: str) -> None:
    e = evaluate(stack, secrets={
        "dbRootPassword": "configured-root-pw",
        "dbAppPassword": "configured-app-pw",
        "sshPrivateKey": SSH_KEY,
    })
    assert not e.of_type(PASSWORD)
    assert passwords(e) == ["configured-root-pw", "configured-app-pw"]
    for cmd in e.of_type(COMMAND):
        assert is_rpc_secret(cmd.inputs["connection"])
        assert cmd.plain("connection")["privateKey"] == SSH_KEY
    for r in e.resources:
        for value, inside_secret in walk_plain(r.inputs):
            if isinstance(value, str) and ("configured-" in value or "not-a-real-key" in value):
                assert inside_secret, f"a secret leaks in clear into {r.type} {r.name}"


def test_failed_host_gets_no_provider_and_nothing_on_it() -> None:
    """dev after a failover: kvm3 failed, lb1 moved to the (former) spare."""
    config = stack_config("dev")
    config["failedHosts"] = ["kvm3"]
    config["spares"] = []
    config["nodes"]["lb1"]["host"] = "spare1"
    e = evaluate("dev", config)
    assert {r.name for r in e.of_type(PROVIDER)} == {"kvm1", "kvm2", "spare1"}
    assert not [r for r in e.resources if r.name.startswith("kvm3")]
    assert all("kvm3" not in r.provider for r in e.resources)
    assert e.one(DOMAIN, "lb1-domain").provider_urn == e.one(PROVIDER, "spare1").urn
    assert e.outputs["nodes"]["lb1"]["host"] == "spare1"
    assert e.outputs["nodes"]["lb1"]["ip"] == "192.168.50.10"  # a moved node keeps its IP


def test_a_node_on_a_failed_host_is_refused() -> None:
    config = stack_config("dev")
    config["failedHosts"] = ["kvm3"]
    with pytest.raises(pulumi.RunError, match=r"mac:nodes\.lb1\.host.*failedHosts"):
        evaluate("dev", config)


def test_evaluations_are_isolated() -> None:
    first = evaluate("dev")
    evaluate("prod")
    again = evaluate("dev")
    assert sorted(r.urn for r in first.resources) == sorted(r.urn for r in again.resources)
    assert all(r.urn.startswith("urn:pulumi:dev::mac::") for r in again.resources)


def test_host_component_exposes_its_parts(evaluation: Evaluation) -> None:
    cluster = evaluation.program["cluster"]
    t = topology_of(evaluation)
    assert set(cluster.hosts) == set(t.live_hosts)
    assert all(isinstance(h, HypervisorHost) for h in cluster.hosts.values())
    assert set(cluster.vms) == set(t.nodes)


def test_a_broken_config_lists_every_problem() -> None:
    config = stack_config("prod")
    config["nodes"]["web2"]["host"] = "kvm3"  # web1 is there already
    config["nodes"]["db2"]["ip"] = "10.99.0.12"  # outside the CIDR
    del config["image"]
    with pytest.raises(pulumi.RunError) as raised:
        evaluate("prod", config)
    message = str(raised.value)
    assert "mac:image" in message
    # parse errors stop before the cluster rules; fix the image and the rules report both
    config["image"] = {"source": "/srv/images/debian.qcow2"}
    with pytest.raises(pulumi.RunError, match=r"(?s)mac:nodes\.db2\.ip.*mac:nodes\.web2\.host"):
        evaluate("prod", config)


def test_ci_stack_without_post_boot_steps() -> None:
    """mac:postBoot false (the engine tests' ci stack): VMs on TCG domains, no SSH steps."""
    e = evaluate("ci")
    assert not e.of_type(COMMAND)
    assert len(e.of_type(DOMAIN)) == 5
    assert {d.inputs["type"] for d in e.of_type(DOMAIN)} == {"qemu"}


def test_post_boot_must_be_a_boolean() -> None:
    config = stack_config("dev")
    config["postBoot"] = "sometimes"
    with pytest.raises(pulumi.RunError, match=r"mac:postBoot.*true or false"):
        evaluate("dev", config)
