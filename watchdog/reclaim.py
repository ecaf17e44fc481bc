"""Reclaim: put a repaired host back as a spare, once it is reachable and runs none of our VMs.

A reclaim is a remediation like any other: a plan (drop the host from the stack's record of fenced
hosts, write the stack file) carried out by the Remediator, under the remediation lock and
journaled; the host checks run under that lock. The MAC domains still defined there (its old VMs,
which may run on the IPs of the nodes that moved) are destroyed before it becomes a spare, and
so is the stack's storage pool left there (the old disks and base images): the program creates
the pool of a host it manages and refuses one that already exists, so the first `pulumi up` that
places a node on the reclaimed host would fail on it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
from collections.abc import Callable

from components.host import pool_name
from components.topology import SSH_PORT, Host, Topology, validate
from watchdog.context import Context
from watchdog.errors import BadInput, RemediationRefused
from watchdog.plan import Action, Plan, Step
from watchdog.reasons import Reason
from watchdog.remediate import Outcome
from watchdog.target import Kind, Target

log = logging.getLogger(__name__)

VIRSH_TIMEOUT_S = 30.0
MIN_PROBE_TIMEOUT_S = 3.0
# `host` -> its domain names, or None when nothing can list them (no virsh here).
DomainLister = Callable[[Host], list[str] | None]
# (`host`, domain name): stop and undefine that domain there.
DomainDestroyer = Callable[[Host, str], None]


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


def destroy_domain(host: Host, name: str, timeout_s: float = VIRSH_TIMEOUT_S) -> None:
    """`virsh destroy` (if it runs) and `virsh undefine` one domain on `host`."""
    virsh = shutil.which("virsh")
    if virsh is None:
        raise RemediationRefused(f"virsh is not installed: cannot destroy {name} on {host.name}")
    for verb in ("destroy", "undefine"):
        try:
            proc = subprocess.run([virsh, "-c", host.uri, verb, name], capture_output=True,
                                  text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RemediationRefused(f"virsh {verb} {name} on {host.name} did not answer within "
                                     f"{timeout_s:g} s") from None
        if proc.returncode != 0 and not (verb == "destroy" and "not running" in proc.stderr):
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RemediationRefused(f"virsh {verb} {name} on {host.name} failed: {last}")


def _virsh(host: Host, *args: str, timeout_s: float = VIRSH_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    virsh = shutil.which("virsh")
    if virsh is None:
        raise RemediationRefused(f"virsh is not installed: cannot clean up {host.name}")
    try:
        return subprocess.run([virsh, "-c", host.uri, *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise RemediationRefused(f"virsh {args[0]} on {host.name} did not answer within "
                                 f"{timeout_s:g} s") from None


def remove_pool(host: Host, timeout_s: float = VIRSH_TIMEOUT_S) -> bool:
    """Remove the stack's pool left on `host` with its volumes; False when there is none (or no
    virsh here). RemediationRefused when it stays."""
    if shutil.which("virsh") is None:
        return False
    name = pool_name(host)
    listed = _virsh(host, "pool-list", "--all", "--name", timeout_s=timeout_s)
    if listed.returncode != 0 or name not in listed.stdout.split():
        return False
    _virsh(host, "pool-start", name, timeout_s=timeout_s)  # an inactive pool lists no volumes
    _virsh(host, "pool-refresh", name, timeout_s=timeout_s)
    volumes = _virsh(host, "vol-list", name, timeout_s=timeout_s).stdout.splitlines()[2:]
    for line in volumes:
        if line.split():
            _virsh(host, "vol-delete", line.split()[0], "--pool", name, timeout_s=timeout_s)
    for verb in ("pool-destroy", "pool-delete", "pool-undefine"):
        _virsh(host, verb, name, timeout_s=timeout_s)
    if name in _virsh(host, "pool-list", "--all", "--name", timeout_s=timeout_s).stdout.split():
        raise RemediationRefused(f"the stale pool {name} on {host.name} could not be removed; "
                                 f"remove it there first (virsh -c {host.uri} pool-undefine {name})")
    return True


def reclaim_plan(topology: Topology, host: str) -> Plan:
    """The plan that puts `host` back among the spares (pure): the stack's record of fenced
    hosts drops it (PRUNE_STATE prunes nothing here), then the stack file lists it as a spare."""
    return Plan(Action.RECLAIM, Reason.HOST_RECLAIMED,
                f"host {host} repaired: back from mac:failedHosts to mac:spares",
                reclaimed(topology, host), steps=(Step.PRUNE_STATE, Step.WRITE_CONFIG))


def check_host(ctx: Context, topology: Topology, host: str, force: bool,
               domains: DomainLister | None = None, destroy: DomainDestroyer | None = None) -> None:
    """Refuse unless `host` answers on its management address; destroy the domains of our nodes
    still defined there (unchecked with `force` when nothing here can list them)."""
    h = topology.hosts[host]
    target = Target(Kind.HOST, host, f"{h.address}:{SSH_PORT}", "host")
    timeout_s = max(topology.watchdog.probe_timeout_s, MIN_PROBE_TIMEOUT_S)
    [result] = asyncio.run(ctx.probe([target], timeout_s))
    if not result.ok:
        raise RemediationRefused(f"{host} is not reachable at {target.address} ({result.error})")
    found = (domains or list_domains)(h)
    if found is None and not force:
        raise RemediationRefused(
            f"virsh is not installed, so nothing checks that {host} runs none of "
            f"{', '.join(sorted(topology.nodes))}; install libvirt-clients, or check by hand "
            "and pass --force")
    ours = our_domains(found or [], topology)
    for name in ours:
        log.warning("reclaim %s: destroying the stale domain %s", host, name)
        (destroy or destroy_domain)(h, name)
    left = our_domains((domains or list_domains)(h) or [], topology) if ours else []
    if left:
        raise RemediationRefused(f"{host} still has our domains {', '.join(left)}; "
                                 f"undefine them there first (virsh -c {h.uri} undefine NAME)")
    if remove_pool(h):
        log.warning("reclaim %s: removed the stale pool %s and its volumes", host, pool_name(h))


def reclaim(ctx: Context, host: str, force: bool = False, domains: DomainLister | None = None,
            destroy: DomainDestroyer | None = None) -> Outcome:
    """Check `host` and put it back as a spare, through the remediation pipeline."""
    topology = ctx.topology()
    p = reclaim_plan(topology, host)
    return ctx.remediator(topology).execute(
        p, "reclaim", precheck=lambda: check_host(ctx, topology, host, force, domains, destroy))
