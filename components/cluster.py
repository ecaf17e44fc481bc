"""MediumAvailabilityCluster: the whole cluster from one Topology.

A HypervisorHost per live host (active hosts and spares; failed hosts get nothing, not even a
provider, because a provider cannot be configured against a dead host), a Vm per node on its
host, and the post-boot steps of the roles as remote Commands.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_command as command

from components import naming, roles
from components.host import HypervisorHost, HypervisorHostArgs
from components.record import StackRecord, next_record, placement_problems, record_output
from components.roles import PostBootStep, Secrets
from components.topology import LB_HTTP_PORT, Node, Topology
from components.vm import Vm, VmArgs, mac_address

TYPE_TOKEN = "mac:index:MediumAvailabilityCluster"
# A fresh VM needs a minute or two before sshd answers: keep dialling for up to ~10 minutes.
SSH_DIAL_ERROR_LIMIT = 40
SSH_PER_DIAL_TIMEOUT_S = 15


@dataclass(frozen=True)
class ClusterArgs:
    topology: Topology
    secrets: pulumi.Output[Secrets]  # a secret Output
    ssh_private_key: pulumi.Input[str] | None = None  # None: pulumi-command uses the SSH agent
    # What the stack's last deploy recorded (components.record); None: nothing (a new stack)
    record: pulumi.Output[StackRecord] | None = None


def lb_url(topology: Topology) -> str:
    """The URL clients use: the LB pair's VIP, else the one load balancer, on its HTTP port."""
    port = "" if LB_HTTP_PORT == 80 else f":{LB_HTTP_PORT}"
    return f"http://{topology.front_ip}{port}/"


def node_map(topology: Topology) -> dict[str, dict[str, str]]:
    """{name: {role, host, ip, health_url}}: what the watchdog and operators look at."""
    return {
        name: {
            "role": node.role.value,
            "host": node.host,
            "ip": node.ip,
            "health_url": topology.health_url(node),
        }
        for name, node in sorted(topology.nodes.items())
    }


def _check_macs(topology: Topology) -> None:
    seen: dict[str, str] = {}
    for name in sorted(topology.nodes):
        mac = mac_address(name)
        if mac in seen:
            raise pulumi.RunError(
                f"nodes {seen[mac]} and {name} derive the same MAC {mac}; rename one of them"
            )
        seen[mac] = name


class MediumAvailabilityCluster(pulumi.ComponentResource):
    """Hosts, VMs and post-boot steps of one Medium Availability Cluster."""

    hosts: dict[str, HypervisorHost]
    vms: dict[str, Vm]
    commands: dict[str, command.remote.Command]

    def __init__(
        self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        topology = args.topology
        _check_macs(topology)
        child = pulumi.ResourceOptions(parent=self)
        previous = args.record if args.record is not None else pulumi.Output.from_input(StackRecord())
        self._previous = previous
        cleared = previous.apply(lambda record: _cleared(topology, record))

        self.hosts = {
            host_name: HypervisorHost(
                naming.host_component(host_name),
                HypervisorHostArgs(topology.hosts[host_name], topology.images, cleared,
                                   per_role=topology.image_per_role),
                child,
            )
            for host_name in topology.live_hosts
        }
        self.vms = {
            node.name: Vm(
                naming.vm_component(node.name),
                VmArgs(
                    node=node,
                    size=topology.size_of(node.role),
                    network=topology.network,
                    host=self.hosts[node.host],
                    image=topology.image_of(node.role),
                    user_data=_user_data(node, topology, args.secrets),
                    cluster_name=topology.cluster_name,
                ),
                child,
            )
            for node in sorted(topology.nodes.values(), key=lambda n: n.name)
        }
        self.commands = {}
        self._last_step_on: dict[str, command.remote.Command] = {}
        founded_now: pulumi.Input[bool] = False
        for step in roles.post_boot_steps(topology) if topology.post_boot else []:
            if step.name in self.commands:
                raise pulumi.RunError(f"two post-boot steps are named {step.name}")
            self.commands[step.name] = self._post_boot_command(step, args)
            self._last_step_on[step.node] = self.commands[step.name]
            if step.founds_cluster:
                founded_now = self.commands[step.name].stdout.apply(lambda _: True)

        self.lb_url = lb_url(topology)
        self.nodes = node_map(topology)
        # Only once the founding step ran does the record say so (never on a failed first deploy).
        self.record = pulumi.Output.all(previous, founded_now).apply(
            lambda values: record_output(next_record(values[0], topology, bool(values[1]))))
        self.register_outputs({"lb_url": self.lb_url, "nodes": self.nodes, "record": self.record})

    def _command_text(self, step: PostBootStep) -> pulumi.Input[str]:
        """The step's command; a founding step differs until the stack records the founding."""
        if step.first_deploy_command is None:
            return step.command
        return self._previous.apply(lambda record: step.command_for(not record.founded))

    def _post_boot_command(self, step: PostBootStep, args: ClusterArgs) -> command.remote.Command:
        """One step as a remote Command: after its VM and the steps it names, gone with its VM.

        Steps of one node also run in list order. No `delete` command: deleting or replacing
        must never need to reach a VM that may be dead.
        """
        vm = self.vms.get(step.node)
        if vm is None:
            raise pulumi.RunError(f"post-boot step {step.name} names unknown node {step.node}")
        missing = [name for name in step.after if name not in self.commands]
        if missing:
            raise pulumi.RunError(
                f"post-boot step {step.name} runs after {', '.join(missing)}, "
                "which are not earlier steps"
            )
        depends_on: list[pulumi.Resource] = [vm.domain, *(self.commands[n] for n in step.after)]
        previous = self._last_step_on.get(step.node)
        if previous is not None:
            depends_on.append(previous)
        stdin: pulumi.Output[str] | None = None
        if step.stdin is not None:
            stdin = pulumi.Output.secret(args.secrets.apply(step.stdin))
        return command.remote.Command(
            step.name,
            connection=command.remote.ConnectionArgs(
                host=vm.node.ip,
                user=args.topology.ssh_user,
                private_key=args.ssh_private_key,
                dial_error_limit=SSH_DIAL_ERROR_LIMIT,
                per_dial_timeout=SSH_PER_DIAL_TIMEOUT_S,
            ),
            create=self._command_text(step),
            stdin=stdin,
            # A new domain (the node moved or was rebuilt) is a fresh VM: run the step again.
            triggers=[vm.domain.id],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=depends_on, deleted_with=vm.domain
            ),
        )


def _cleared(topology: Topology, record: StackRecord) -> StackRecord:
    """`record`, once this stack file may be deployed; RunError (nothing placed) otherwise."""
    problems = placement_problems(topology, record)
    if problems:
        raise pulumi.RunError("refusing to deploy: " + "; ".join(str(p) for p in problems))
    return record


def _user_data(node: Node, topology: Topology, secrets: pulumi.Output[Secrets]) -> pulumi.Output[str]:
    """The node's cloud-config, rendered only inside a secret Output (it holds passwords)."""

    def render(values: Secrets) -> str:
        return roles.user_data(node, topology, values)

    return pulumi.Output.secret(secrets.apply(render))
