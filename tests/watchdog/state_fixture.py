"""An exported deployment shaped like the MAC program's state (test data, not from a real stack)."""

from __future__ import annotations

from typing import Any

STACK = "test"
P = f"urn:pulumi:{STACK}::mac::"
CLUSTER = f"{P}mac:index:MediumAvailabilityCluster::mac"
HOST_T = "mac:index:MediumAvailabilityCluster$mac:index:HypervisorHost"
VM_T = "mac:index:MediumAvailabilityCluster$mac:index:Vm"
CMD_T = "mac:index:MediumAvailabilityCluster$command:remote:Command"


def _host(name: str, uri: str) -> list[dict[str, Any]]:
    comp = f"{P}{HOST_T}::{name}"
    prov = f"{P}{HOST_T}$pulumi:providers:libvirt::{name}"
    ref = f"{prov}::prov-{name}"
    pool = f"{P}{HOST_T}$libvirt:index/pool:Pool::{name}-pool"
    base = f"{P}{HOST_T}$libvirt:index/volume:Volume::{name}-base-image"
    return [
        {"urn": comp, "type": "mac:index:HypervisorHost", "custom": False, "parent": CLUSTER},
        {"urn": prov, "type": "pulumi:providers:libvirt", "custom": True, "id": f"prov-{name}",
         "parent": comp, "inputs": {"uri": uri}, "outputs": {"uri": uri}},
        {"urn": pool, "type": "libvirt:index/pool:Pool", "custom": True, "id": f"pool-{name}",
         "parent": comp, "provider": ref},
        {"urn": base, "type": "libvirt:index/volume:Volume", "custom": True, "id": f"base-{name}",
         "parent": comp, "provider": ref, "dependencies": [pool], "propertyDependencies": {"pool": [pool]}},
    ]


def _vm(node: str, host: str) -> list[dict[str, Any]]:
    comp = f"{P}{VM_T}::{node}"
    ref = f"{P}{HOST_T}$pulumi:providers:libvirt::{host}::prov-{host}"
    base = f"{P}{HOST_T}$libvirt:index/volume:Volume::{host}-base-image"
    root = f"{P}{VM_T}$libvirt:index/volume:Volume::{node}-root"
    ci = f"{P}{VM_T}$libvirt:index/cloudInitDisk:CloudInitDisk::{node}-cloud-init"
    dom = f"{P}{VM_T}$libvirt:index/domain:Domain::{node}-domain"
    return [
        {"urn": comp, "type": "mac:index:Vm", "custom": False, "parent": CLUSTER},
        {"urn": root, "type": "libvirt:index/volume:Volume", "custom": True, "id": f"{node}-root",
         "parent": comp, "provider": ref, "dependencies": [base]},
        {"urn": ci, "type": "libvirt:index/cloudInitDisk:CloudInitDisk", "custom": True,
         "id": f"{node}-ci", "parent": comp, "provider": ref},
        {"urn": dom, "type": "libvirt:index/domain:Domain", "custom": True, "id": f"{node}-uuid",
         "parent": comp, "provider": ref, "dependencies": [root, ci],
         "propertyDependencies": {"disks": [root], "cloudinit": [ci]}},
    ]


def _cmd(name: str, node: str, after: list[str]) -> dict[str, Any]:
    dom = f"{P}{VM_T}$libvirt:index/domain:Domain::{node}-domain"
    deps = [dom, *(f"{P}{CMD_T}::{a}" for a in after)]
    return {"urn": f"{P}{CMD_T}::{name}", "type": "command:remote:Command", "custom": True,
            "id": name, "parent": CLUSTER, "deletedWith": dom, "dependencies": deps,
            "provider": f"urn:pulumi:{STACK}::mac::pulumi:providers:command::default::cmd-id",
            "inputs": {"connection": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                                      "ciphertext": "secret"}}}


def deployment() -> dict[str, Any]:
    """The deployment of the loopback `test` stack: kvm1 runs db1+web1, kvm2 db2+web2, kvm3 lb1."""
    resources: list[dict[str, Any]] = [
        {"urn": f"{P}pulumi:pulumi:Stack::mac-{STACK}", "type": "pulumi:pulumi:Stack", "custom": False},
        {"urn": f"urn:pulumi:{STACK}::mac::pulumi:providers:command::default", "type":
         "pulumi:providers:command", "custom": True, "id": "cmd-id"},
        {"urn": CLUSTER, "type": "mac:index:MediumAvailabilityCluster", "custom": False},
    ]
    for name, ip in (("kvm1", "127.0.1.1"), ("kvm2", "127.0.1.2"), ("kvm3", "127.0.1.3"),
                     ("spare1", "127.0.1.21")):
        resources += _host(name, f"qemu+ssh://root@{ip}/system")
    for node, host in (("db1", "kvm1"), ("db2", "kvm2"), ("lb1", "kvm3"), ("web1", "kvm1"),
                       ("web2", "kvm2")):
        resources += _vm(node, host)
    resources += [
        _cmd("db1-bootstrap", "db1", []),
        _cmd("db2-join", "db2", ["db1-bootstrap"]),
        _cmd("lb1-garbd", "lb1", []),
        _cmd("web1-app", "web1", []),
        _cmd("web2-app", "web2", []),
    ]
    return {"manifest": {"time": "2026-11-26T08:00:00Z", "version": "v3.272.0"},
            "secrets_providers": {"type": "passphrase"}, "resources": resources,
            "pending_operations": [{"resource": {"urn": f"{P}{VM_T}$libvirt:index/domain:Domain::db1-domain"},
                                    "type": "updating"}]}


def exported() -> dict[str, Any]:
    return {"version": 3, "deployment": deployment()}
