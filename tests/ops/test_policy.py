"""The policy pack (policy/) against the resources the program produces under Pulumi's mocks.

Each resource the mock monitor recorded becomes a pulumi-policy `PolicyResource` (inputs as
props, provider, parent chain, resource options), as the engine hands them to the pack; then the
pack's own policies run, exactly as `pulumi preview --policy-pack policy` would call them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pulumi.runtime.rpc import unwrap_rpc_secret
from pulumi_policy import (
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.policy import PolicyCustomTimeouts

from components.stack_file import load_topology, stack_path
from components.topology import Topology
from policy import mac_policies
from tests.unit.harness import PROJECT_DIR, STACKS, Evaluation, Registered, evaluate, stack_config

CLOUD_INIT = mac_policies.CLOUD_INIT


def _plain(value: Any) -> Any:
    """Inputs as a policy sees them: secrets unwrapped (pulumi-policy unwraps them too)."""
    value = unwrap_rpc_secret(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def policy_resources(e: Evaluation) -> list[PolicyResource]:
    by_urn: dict[str, PolicyResource] = {}
    providers: dict[str, PolicyProviderResource] = {}
    for r in e.resources:  # parents and providers register before their children
        opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0),
                                     r.additional_secret_outputs, r.parent or None)
        provider = providers.get(r.provider_urn)
        props = _plain(r.inputs) if r.custom else _plain(r.outputs)
        resource = PolicyResource(r.type, props, r.urn, r.name, opts, provider, by_urn.get(r.parent),
                                  [], {})
        by_urn[r.urn] = resource
        if r.type.startswith("pulumi:providers:"):
            providers[r.urn] = PolicyProviderResource(r.type, props, r.urn, r.name)
    return list(by_urn.values())


def violations(resources: list[PolicyResource]) -> list[tuple[str, str, str | None]]:
    """Run every policy of the pack; (policy, message, urn) per violation."""
    found: list[tuple[str, str, str | None]] = []
    for p in mac_policies.POLICIES:
        def report(message: str, urn: str | None = None, _name: str = p.name) -> None:
            found.append((_name, message, urn))
        if isinstance(p, StackValidationPolicy):
            p.validate(StackValidationArgs(resources), report)
        elif isinstance(p, ResourceValidationPolicy):
            for r in resources:
                args = ResourceValidationArgs(r.resource_type, r.props, r.urn, r.name, r.opts, r.provider)
                p.validate(args, report)
    return found


def _evaluate_topology(stack: str, change: Any) -> Evaluation:
    config = stack_config(stack)
    change(config)
    return evaluate(stack, config)


@pytest.mark.parametrize("stack", STACKS)
def test_the_program_passes_the_pack(stack: str) -> None:
    e = evaluate(stack)
    resources = policy_resources(e)
    assert {r.resource_type for r in resources} >= {mac_policies.DOMAIN, CLOUD_INIT, mac_policies.PROVIDER}
    assert violations(resources) == []


def test_the_pack_names_four_mandatory_policies() -> None:
    assert [p.name for p in mac_policies.POLICIES] == [
        "mac-role-anti-affinity", "mac-spare-host", "mac-no-autostart", "mac-no-clear-secrets-in-user-data"]


def _move(resources: list[PolicyResource], node: str, onto: str) -> None:
    """Put `node`'s domain on the provider of host `onto`: what a bad placement would produce."""
    target = next(r for r in resources if r.resource_type == mac_policies.PROVIDER and r.name == onto)
    domain = next(r for r in resources
                  if r.resource_type == mac_policies.DOMAIN and r.name == f"{node}-domain")
    domain.provider = PolicyProviderResource(target.resource_type, target.props, target.urn, target.name)


@pytest.mark.parametrize(("a", "b", "role"), [("db1", "db2", "mysql"), ("web1", "web2", "web")])
def test_two_nodes_of_a_role_on_one_host_are_refused(a: str, b: str, role: str) -> None:
    e = evaluate("dev")
    resources = policy_resources(e)
    topology: Topology = e.program["config"].topology
    _move(resources, b, topology.nodes[a].host)
    [(policy, message, urn)] = violations(resources)
    assert policy == "mac-role-anti-affinity"
    assert f"2 {role} domains on host provider {topology.nodes[a].host}" in message
    assert urn is not None and urn.endswith(f"{b}-domain")


def test_a_web_and_a_db_node_may_share_a_host() -> None:
    e = evaluate("dev")
    resources = policy_resources(e)
    assert e.program["config"].topology.nodes["db1"].host == e.program["config"].topology.nodes["web1"].host
    assert violations(resources) == []


def test_no_spare_host_is_refused() -> None:
    def no_spare(config: dict[str, Any]) -> None:
        spare = config["spares"][0]
        config["spares"] = []
        # Every host gets a node: the model alone would accept this (it has no spare rule).
        config["nodes"]["lb1"]["host"] = spare
        config["nodes"]["web2"]["host"] = "kvm3"
    resources = policy_resources(_evaluate_topology("dev", no_spare))
    [(policy, message, urn)] = violations(resources)
    assert policy == "mac-spare-host"
    assert message.startswith("no spare host: every one of the 4 host providers")
    assert urn is None


def test_the_model_and_the_pack_agree_on_spares() -> None:
    topology = load_topology(stack_path(PROJECT_DIR, "dev"))
    resources = policy_resources(evaluate("dev"))
    used = {r.provider.name for r in resources if r.resource_type == mac_policies.DOMAIN and r.provider}
    idle = {r.name for r in resources if r.resource_type == mac_policies.PROVIDER} - used
    assert idle == set(topology.spares)


@pytest.mark.parametrize("value", [True, None])
def test_autostart_must_be_false(value: bool | None) -> None:
    resources = policy_resources(evaluate("dev"))
    domain = next(r for r in resources if r.resource_type == mac_policies.DOMAIN and r.name == "web1-domain")
    props = dict(domain.props)
    if value is None:
        del props["autostart"]
    else:
        props["autostart"] = value
    domain.props = props
    [(policy, message, _)] = violations(resources)
    assert policy == "mac-no-autostart"
    assert message.startswith(f"domain web1-domain: autostart is {value!r}, must be false")


def test_every_domain_the_program_makes_has_autostart_false() -> None:
    for r in policy_resources(evaluate("prod")):
        if r.resource_type == mac_policies.DOMAIN:
            assert r.props["autostart"] is False


def test_user_data_with_a_password_must_be_a_secret_output() -> None:
    e = evaluate("dev")
    disk: Registered = e.one(CLOUD_INIT, "web1-cloud-init")
    assert disk.additional_secret_outputs == ["userData"]
    assert '"password": "' in disk.plain("userData")  # the web node's DB settings
    resources = policy_resources(e)
    r = next(r for r in resources if r.name == "web1-cloud-init")
    r.opts = copy.copy(r.opts)
    r.opts.additional_secret_outputs = []
    [(policy, message, _)] = violations(resources)
    assert policy == "mac-no-clear-secrets-in-user-data"
    assert "web1-cloud-init: user data holds a password setting in clear" in message


@pytest.mark.parametrize(("text", "kind"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n", "a private key"),
    ("[client]\npassword=hunter22\n", "a password setting"),
    ("passwd: s3cr3tpw\n", "a password setting"),
    ("CREATE USER 'app'@'%' IDENTIFIED BY 'hunter22';", "an SQL password"),
    ("wsrep_sst_auth = root:hunter22\n", "SST credentials"),
])
def test_secret_patterns(text: str, kind: str) -> None:
    [v] = mac_policies.clear_secrets({"userData": f"#cloud-config\n{text}"}, [], "x")
    assert kind in v.message


@pytest.mark.parametrize("text", [
    "runcmd: [systemctl restart apache2]\n",
    "$db->real_connect($host, $c['user'], $c['password'], $c['database']);\n",
    "pass  # probes every 500 ms would flood the journal\n",
    "ssh_pwauth: false\n",
])
def test_no_false_alarm_on_the_roles_text(text: str) -> None:
    assert mac_policies.clear_secrets({"userData": text}, [], "x") == []
