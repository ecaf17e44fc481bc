"""MAC components: the topology model and the Pulumi components built from it."""
