"""MAC watchdog: probes the cluster, decides what really failed, and heals it through Pulumi."""
