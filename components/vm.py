"""Vm: one node as a libvirt domain on its host.

Root volume (copy-on-write over its role's base image on the host), a cloud-init disk (user-data from the
role, network-config with the node's static IP, meta-data with its hostname) and the domain on
the bridge, booting the role's kernel directly when its image has one. Every resource uses the
provider of the node's host.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_libvirt as libvirt

from components import naming
from components.host import HypervisorHost
from components.topology import Image, Network, Node, Size

TYPE_TOKEN = "mac:index:Vm"
GIB = 1024**3
INTERFACE = "eth0"
# QEMU's OUI; the rest is derived from the node name so a moved node keeps its MAC.
MAC_PREFIX = "52:54:00"


def mac_address(node_name: str) -> str:
    """A stable MAC for `node_name`: same name, same MAC, on whichever host the node runs."""
    digest = hashlib.sha256(node_name.encode()).digest()
    return ":".join([MAC_PREFIX, *(f"{b:02x}" for b in digest[:3])])


def _yaml_text(data: dict[str, Any]) -> str:
    """YAML for cloud-init, written as JSON (a subset of YAML).

    Every string is quoted, so cloud-init's YAML 1.1 loader cannot turn a value into something
    else (52:54:00:12:34:56 is a base-60 integer there); and it is ~50x faster than ruamel.
    """
    return json.dumps(data, indent=2) + "\n"


def network_config(node: Node, network: Network) -> str:
    """Netplan v2 network-config: static IP, default route and DNS on the NIC with our MAC."""
    ethernet: dict[str, Any] = {
        "match": {"macaddress": mac_address(node.name)},
        "set-name": INTERFACE,
        "dhcp4": False,
        "addresses": [f"{node.ip}/{network.prefix_len}"],
        "routes": [{"to": "default", "via": network.gateway}],
    }
    if network.dns:
        ethernet["nameservers"] = {"addresses": list(network.dns)}
    return _yaml_text({"version": 2, "ethernets": {INTERFACE: ethernet}})


def cmdline_maps(cmdline: str) -> list[dict[str, str]]:
    """The kernel command line as pulumi_libvirt's `cmdlines`: one map per word, in order, so
    MAC's provider (which joins them with spaces, a `_` key for a bare word) gives the kernel
    exactly `cmdline`."""
    maps = []
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        maps.append({key: value} if sep and key and key != "_" else {"_": word})
    return maps


def meta_data(node: Node, cluster_name: str) -> str:
    """cloud-init meta-data. The instance-id is per node: cloud-init runs once per fresh disk."""
    return _yaml_text({"instance-id": f"{cluster_name}-{node.name}", "local-hostname": node.name})


@dataclass(frozen=True)
class VmArgs:
    node: Node
    size: Size
    network: Network
    host: HypervisorHost
    image: Image  # the node's role's image (Topology.image_of)
    user_data: pulumi.Input[str]  # the role's #cloud-config; a secret Output when it holds secrets
    cluster_name: str = "mac"


class Vm(pulumi.ComponentResource):
    """Root volume + cloud-init disk + domain of one node, all on the node's host."""

    root_volume: libvirt.Volume
    cloud_init: libvirt.CloudInitDisk
    domain: libvirt.Domain

    def __init__(self, name: str, args: VmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        node = args.node
        self.node = node
        # Names inside libvirt are fixed per node, so a replacement must delete the old object
        # first; it also keeps two VMs with one IP from ever running at once during a move.
        on_host = pulumi.ResourceOptions(
            parent=self, provider=args.host.provider, delete_before_replace=True
        )
        pool = args.host.pool.name
        self.root_volume = libvirt.Volume(
            naming.vm_root_volume(node.name),
            name=f"{node.name}-root.qcow2",
            pool=pool,
            base_volume_id=args.host.base_image(args.image).id,
            size=args.size.disk_gib * GIB,
            format="qcow2",
            opts=on_host,
        )
        self.cloud_init = libvirt.CloudInitDisk(
            naming.vm_cloud_init(node.name),
            name=f"{node.name}-cloud-init.iso",
            pool=pool,
            user_data=args.user_data,
            network_config=network_config(node, args.network),
            meta_data=meta_data(node, args.cluster_name),
            # The user data holds passwords: its output is a secret even if an input ever loses
            # the secret mark. The policy pack (policy/) checks this flag, the one it can see.
            opts=pulumi.ResourceOptions.merge(
                on_host, pulumi.ResourceOptions(additional_secret_outputs=["userData"])
            ),
        )
        boot: dict[str, Any] = {}
        cmdline = args.image.kernel_cmdline
        if args.image.kernel is not None and args.image.initrd is not None and cmdline is not None:
            # A volume's id in a dir pool is its path on the host: what <os><kernel> takes.
            boot = {"kernel": args.host.boot_file(args.image.kernel).id,
                    "initrd": args.host.boot_file(args.image.initrd).id,
                    "cmdlines": cmdline_maps(cmdline)}
        self.domain = libvirt.Domain(
            naming.vm_domain(node.name),
            name=node.name,
            type=args.host.host.domain_type,
            vcpu=args.size.vcpu,
            memory=args.size.memory_mib,
            # A host that comes back must not resurrect a VM that now runs elsewhere.
            autostart=False,
            qemu_agent=True,
            cloudinit=self.cloud_init.id,
            disks=[libvirt.DomainDiskArgs(volume_id=self.root_volume.id)],
            network_interfaces=[
                libvirt.DomainNetworkInterfaceArgs(
                    bridge=args.network.bridge,
                    mac=mac_address(node.name),
                    hostname=node.name,
                    # Static IP from cloud-init: there is no DHCP lease to wait for.
                    wait_for_lease=False,
                )
            ],
            # Cloud images log to the serial console; without one some hang at boot.
            consoles=[libvirt.DomainConsoleArgs(type="pty", target_port="0", target_type="serial")],
            **boot,
            opts=on_host,
        )
        self.register_outputs({
            "role": node.role.value,  # the policy pack's anti-affinity check reads it
            "ip": node.ip,
            "host": node.host,
            "domain_id": self.domain.id,
        })
