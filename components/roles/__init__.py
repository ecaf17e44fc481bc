"""Roles: what runs inside each VM (mysql, web, lb), rendered from the topology.

Contract used by the Pulumi program (components/vm.py, components/cluster.py) and the lab:
- `user_data(node, topology, secrets)` -> the node's `#cloud-config` text.
- `post_boot_steps(topology)` -> the ordered steps run over SSH after boot (pulumi-command).
Config files are rendered by per-role functions with plain parameters (paths, ports) so the lab
starts the real daemons with exactly what a VM gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from components.topology import Node, Topology


@dataclass(frozen=True)
class Secrets:
    """Plain secret values; only ever handled inside a Pulumi secret Output or the lab."""

    db_root_password: str
    db_app_password: str


@dataclass(frozen=True)
class PostBootStep:
    """One command run on `node` over SSH after it booted.

    `command` never contains a secret (it is visible in the VM's process list); anything
    secret goes through `stdin`, rendered from the Secrets inside a secret Output.
    """

    name: str
    node: str
    command: str
    stdin: Callable[[Secrets], str] | None = None
    after: tuple[str, ...] = ()  # names of steps that must finish first
