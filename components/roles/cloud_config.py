"""Assemble a `#cloud-config` document from packages, files and commands."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from components.roles.escape import one_line

# Debian's convention: while this file exits 101, package installs start no service. The roles'
# configs are written before the packages install, so a half-configured daemon (a Galera node
# that tries to join an empty cluster) must not start from the postinst.
POLICY_RC_D = "/usr/sbin/policy-rc.d"
POLICY_RC_D_DENY = ("#!/bin/sh\n# written by MAC cloud-config: start nothing while packages install\n"
                    "exit 101\n")


@dataclass(frozen=True)
class WriteFile:
    """One entry of cloud-init's `write_files`."""

    path: str
    content: str
    permissions: str = "0644"
    owner: str = "root:root"


def render_cloud_config(
    hostname: str,
    packages: Sequence[str],
    files: Sequence[WriteFile],
    runcmd: Sequence[str | Sequence[str]],
    ssh_user: str = "root",
    ssh_public_key: str | None = None,
) -> str:
    """The `#cloud-config` text; file contents are block literals so the output stays readable."""
    doc: dict[str, object] = {
        "hostname": hostname,
        "preserve_hostname": False,
        "package_update": True,
        "packages": list(packages),
        "write_files": [_write_file(f) for f in [WriteFile(POLICY_RC_D, POLICY_RC_D_DENY, "0755"),
                                                  *files]],
        "runcmd": [[*cmd] if not isinstance(cmd, str) else cmd
                   for cmd in [["rm", "-f", POLICY_RC_D], *runcmd]],
        "ssh_genkeytypes": ["ed25519"],
    }
    if ssh_public_key:
        ssh_public_key = one_line(ssh_public_key, "ssh public key")  # one authorized_keys line
        if ssh_user == "root":
            doc["disable_root"] = False
            doc["ssh_authorized_keys"] = [ssh_public_key]
        else:
            doc["users"] = ["default", {"name": ssh_user, "sudo": "ALL=(ALL) NOPASSWD:ALL",
                                        "shell": "/bin/bash",
                                        "ssh_authorized_keys": [ssh_public_key]}]
    yaml = YAML(typ="rt")
    yaml.width = 4096
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    return "#cloud-config\n" + buffer.getvalue()


def _write_file(f: WriteFile) -> dict[str, str]:
    content = f.content if f.content.endswith("\n") else f.content + "\n"
    return {"path": f.path, "owner": f.owner, "permissions": f.permissions,
            "content": LiteralScalarString(content)}
