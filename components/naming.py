"""Pulumi resource names of the cluster's parts: one place for the program and the watchdog.

The program names its resources with these functions; the watchdog's state surgery
(watchdog/state.py) finds a dead host's provider and a node's domain in an exported state with
the same functions, so the two can never drift apart.
"""

from __future__ import annotations


def host_component(host: str) -> str:
    """The HypervisorHost component of `host`."""
    return host


def host_provider(host: str) -> str:
    """The explicit libvirt provider that talks to `host`."""
    return host


def host_pool(host: str) -> str:
    return f"{host}-pool"


def _keyed(name: str, key: str) -> str:
    return f"{name}-{key}" if key else name


def host_base_image(host: str, key: str = "") -> str:
    """A base image on `host`; `key` (a digest of its source) when there is one per role."""
    return _keyed(f"{host}-base-image", key)


def host_kernel(host: str, key: str = "") -> str:
    """A kernel for direct kernel boot on `host`; `key` as for host_base_image."""
    return _keyed(f"{host}-kernel", key)


def host_initrd(host: str, key: str = "") -> str:
    return _keyed(f"{host}-initrd", key)


def vm_component(node: str) -> str:
    """The Vm component of `node`."""
    return node


def vm_root_volume(node: str) -> str:
    return f"{node}-root"


def vm_cloud_init(node: str) -> str:
    return f"{node}-cloud-init"


def vm_domain(node: str) -> str:
    """The libvirt Domain of `node`."""
    return f"{node}-domain"
