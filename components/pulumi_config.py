"""Read the stack's `mac:` config into a Topology and the cluster's secrets (Pulumi side only).

The topology is parsed and validated by `components.topology.parse_topology`, exactly as the
watchdog does from the stack file, so both readers agree on what the cluster is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_random as random

from components.record import RECORD_OUTPUT, StackRecord, parse_record
from components.roles import Secrets
from components.topology import (
    BOOL_KEYS,
    NAMESPACE,
    STRING_KEYS,
    STRUCTURED_KEYS,
    Topology,
    TopologyError,
    parse_topology,
)

# Generated passwords: long and alphanumeric, so they are safe in my.cnf, SQL and shell quoting.
GENERATED_PASSWORD_LENGTH = 32
RECORD_REFERENCE = "mac-record"  # the StackReference the program reads its own record through
DIY_ORGANIZATION = "organization"  # what file (diy) backends call every stack's organization


@dataclass(frozen=True)
class ProgramConfig:
    """Everything the program reads from the stack config."""

    topology: Topology
    secrets: pulumi.Output[Secrets]  # always a secret Output
    ssh_private_key: pulumi.Output[str] | None  # secret; None: pulumi-command uses the SSH agent


def topology_from_config(config: pulumi.Config | None = None) -> Topology:
    """The validated Topology of the current stack; RunError listing every problem otherwise."""
    config = config or pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for key in STRUCTURED_KEYS:
        try:
            value = config.get_object(key)
        except pulumi.ConfigTypeError:
            value = config.get(key)  # not JSON: the model says what the key must hold
        if value is not None:
            raw[key] = value
    # Strings as the CLI stores them ("false" for a boolean): the model reads them as typed values.
    for key in (*STRING_KEYS, *BOOL_KEYS):
        text = config.get(key)
        if text is not None:
            raw[key] = text
    try:
        return parse_topology(raw)
    except TopologyError as err:
        # RunError: Pulumi prints the message without a Python traceback.
        raise pulumi.RunError(f"invalid stack config ({len(err.problems)} problems):\n{err}") from err


def password(config: pulumi.Config, key: str, resource_name: str) -> pulumi.Output[str]:
    """The secret config value `key`, or a generated RandomPassword kept in the stack state."""
    value = config.get_secret(key)
    if value is not None:
        return value
    generated = random.RandomPassword(resource_name, length=GENERATED_PASSWORD_LENGTH, special=False)
    return pulumi.Output.secret(generated.result)


def load_secrets(config: pulumi.Config | None = None) -> pulumi.Output[Secrets]:
    """The DB passwords as one secret Output (configured with --secret, else generated)."""
    config = config or pulumi.Config(NAMESPACE)
    root = password(config, "dbRootPassword", "db-root-password")
    app = password(config, "dbAppPassword", "db-app-password")
    return pulumi.Output.secret(
        pulumi.Output.all(root, app).apply(lambda values: Secrets(values[0], values[1]))
    )


def load() -> ProgramConfig:
    """Topology, secrets and SSH key of the current stack."""
    config = pulumi.Config(NAMESPACE)
    return ProgramConfig(
        topology=topology_from_config(config),
        secrets=load_secrets(config),
        ssh_private_key=config.get_secret("sshPrivateKey"),
    )


def previous_record() -> pulumi.Output[StackRecord]:
    """The record the stack's last deploy exported (an empty record before its first deploy),
    read through a StackReference to this very stack: it lives in the backend, not in the file."""
    organization = pulumi.get_organization() or DIY_ORGANIZATION
    slug = f"{organization}/{pulumi.get_project()}/{pulumi.get_stack()}"
    reference = pulumi.StackReference(RECORD_REFERENCE, stack_name=slug)
    return reference.get_output(RECORD_OUTPUT).apply(parse_record)
