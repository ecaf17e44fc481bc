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
    # Run instead of `command` while the stack's DB cluster was never founded (its first deploy).
    first_deploy_command: str | None = None
    founds_cluster: bool = False  # done: the DB cluster exists (the stack records that)

    def command_for(self, first_deploy: bool) -> str:
        return self.first_deploy_command if first_deploy and self.first_deploy_command else self.command


# --------------------------------------------------------------------------------------------
# Rendering: cloud-config per node and the post-boot steps (everything below the contract).
# --------------------------------------------------------------------------------------------

import shlex  # noqa: E402 (the contract above stays first)

from components.roles import keepalived, lb, mysql, web  # noqa: E402
from components.roles.cloud_config import WriteFile, render_cloud_config  # noqa: E402
from components.topology import Role  # noqa: E402

WAIT_CLOUD_INIT = "cloud-init status --wait >/dev/null; test -f /var/lib/cloud/instance/boot-finished"


def user_data(node: Node, topology: Topology, secrets: Secrets) -> str:
    """The node's `#cloud-config`: its role's packages, rendered files and first-boot commands."""
    packages: tuple[str, ...]
    files: list[WriteFile]
    runcmd: list[str | list[str]]
    if node.role is Role.MYSQL:
        packages, files, runcmd = mysql.PACKAGES, mysql.files(node, topology), mysql.runcmd()
    elif node.role is Role.WEB:
        packages = web.PACKAGES
        files, runcmd = web.files(node, topology, secrets.db_app_password), web.runcmd()
    else:
        # A pair of LBs (mac:network.vip) adds keepalived; a single LB renders as before.
        pair = topology.network.vip is not None
        packages = (*lb.PACKAGES, *(keepalived.PACKAGES if pair else ()))
        files = [*lb.files(node, topology), *keepalived.files(node, topology)]
        runcmd = [*keepalived.runcmd(topology), *lb.runcmd(), *keepalived.start_cmd(topology)]
    return render_cloud_config(node.name, ("curl", *packages), files, runcmd,
                               topology.ssh_user, topology.ssh_public_key)


def post_boot_steps(topology: Topology) -> list[PostBootStep]:
    """Ordered steps after boot: cloud-init done everywhere, Galera up node by node, schema, garbd."""
    def root(command: str) -> str:
        return command if topology.ssh_user == "root" else f"sudo -n sh -c {shlex.quote(command)}"

    steps = [PostBootStep(f"wait-cloud-init-{n.name}", n.name, root(WAIT_CLOUD_INIT))
             for n in topology.nodes.values()]
    previous: tuple[str, ...] = ()
    dbs = topology.nodes_of(Role.MYSQL)
    for db in dbs:
        name = f"galera-start-{db.name}"
        steps.append(PostBootStep(
            name, db.name, root(mysql.GALERA_START), after=(f"wait-cloud-init-{db.name}", *previous),
            first_deploy_command=root(f"{mysql.GALERA_START} {mysql.FIRST_DEPLOY_FLAG}"),
            founds_cluster=db is dbs[0]))
        previous = (name,)
    first = dbs[0]
    steps.append(PostBootStep(
        "app-schema", first.name, root("mariadb --batch"),
        stdin=lambda s: mysql.app_schema_sql(s.db_app_password, s.db_root_password),
        after=(f"galera-start-{first.name}",)))
    node = topology.arbitrator  # garbd on one LB only, also with a pair (odd number of votes)
    steps.append(PostBootStep(
        f"garbd-start-{node.name}", node.name, root("systemctl enable --now mac-garbd.service"),
        after=(f"wait-cloud-init-{node.name}", f"galera-start-{first.name}")))
    return steps
