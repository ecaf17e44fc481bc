"""Reclaim: put a repaired host back as a spare, once it is reachable and runs none of our VMs."""

from __future__ import annotations

import shutil
import subprocess

from components.topology import Host, Topology, validate
from watchdog.errors import BadInput, RemediationRefused

VIRSH_TIMEOUT_S = 30.0


def reclaimed(topology: Topology, host: str) -> Topology:
    """The topology with `host` moved from mac:failedHosts back to mac:spares (pure)."""
    if host not in topology.hosts:
        raise BadInput(f"HOST = {host!r}: not a host in mac:hosts (known: {', '.join(topology.hosts)})")
    if host not in topology.failed_hosts:
        raise BadInput(f"HOST = {host!r}: not in mac:failedHosts ({list(topology.failed_hosts)}); "
                       "only a failed host can be reclaimed")
    new = topology.with_(failed_hosts=tuple(h for h in topology.failed_hosts if h != host),
                         spares=(*topology.spares, host))
    problems = validate(new)
    if problems:
        raise RemediationRefused(f"reclaiming {host} would break a rule: {problems[0]}")
    return new


def our_domains(names: list[str], topology: Topology) -> list[str]:
    """Which libvirt domain names belong to this cluster's nodes."""
    nodes = set(topology.nodes)
    return sorted(d for d in names if d in nodes or any(d.endswith(f"-{n}") for n in nodes))


def list_domains(host: Host, timeout_s: float = VIRSH_TIMEOUT_S) -> list[str] | None:
    """Every domain on `host` (`virsh list --all --name`); None when virsh is not installed."""
    virsh = shutil.which("virsh")
    if virsh is None:
        return None
    try:
        proc = subprocess.run([virsh, "-c", host.uri, "list", "--all", "--name"],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise RemediationRefused(f"virsh did not answer for {host.name} within {timeout_s:g} s; "
                                 "is libvirtd running there?") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RemediationRefused(f"virsh cannot list the domains of {host.name}: {last}")
    return [line.strip() for line in proc.stdout.splitlines() if line.strip()]
