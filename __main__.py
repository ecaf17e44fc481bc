"""MAC: the Pulumi program. Reads the stack config, builds the cluster, exports what it is."""

import pulumi

from components.cluster import ClusterArgs, MediumAvailabilityCluster
from components.pulumi_config import load, previous_record
from components.record import RECORD_OUTPUT

config = load()
cluster = MediumAvailabilityCluster(
    config.topology.cluster_name,
    ClusterArgs(
        topology=config.topology,
        secrets=config.secrets,
        ssh_private_key=config.ssh_private_key,
        record=previous_record(),
    ),
)

pulumi.export("lb_url", cluster.lb_url)
pulumi.export("nodes", cluster.nodes)
pulumi.export(RECORD_OUTPUT, cluster.record)
