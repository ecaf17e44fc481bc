"""The policy pack's entry point: the Python language host runs this file to serve the pack."""

from mac_policies import POLICIES  # the pack directory is on sys.path when this file runs
from pulumi_policy import EnforcementLevel, PolicyPack

if __name__ == "__main__":
    PolicyPack(name="mac", enforcement_level=EnforcementLevel.MANDATORY, policies=list(POLICIES))
