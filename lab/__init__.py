"""The lab: a stack's cluster run for real on this machine, one network namespace per node."""
