"""MAC's rules over the resources a stack would have, as pulumi-policy policies.

Each check is a plain function over the resources (tested under Pulumi's mocks in
tests/ops/test_policy.py); the policies only wrap them. The rules repeat what the topology model
enforces, but on what the program actually produced, so a program change that breaks them is
caught in PR review even if the model's validation was bypassed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

PROVIDER = "pulumi:providers:libvirt"
DOMAIN = "libvirt:index/domain:Domain"
CLOUD_INIT = "libvirt:index/cloudInitDisk:CloudInitDisk"
VM = "mac:index:Vm"
EXCLUSIVE_ROLES = ("mysql", "web")  # at most one node of each on a host (the lb runs alone anyway)

# Secret material as it appears in a rendered cloud-config: key blocks, JSON/INI/YAML password
# settings with a non-empty value, SQL that sets a password, Galera's SST credentials.
SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a password setting", re.compile(
        r"""["']?\b\w*pass(?:word|wd)?\b["']?\s*[:=]\s*["']?[^\s"',}{$]{4,}""", re.IGNORECASE)),
    ("an SQL password", re.compile(r"IDENTIFIED\s+(?:BY|WITH\s+\w+\s+BY)\s+'[^']+'", re.IGNORECASE)),
    ("SST credentials", re.compile(r"wsrep_sst_auth\s*=\s*\S+:\S+")),
)


@dataclass(frozen=True)
class Violation:
    message: str
    urn: str | None = None


def _provider_name(r: PolicyResource) -> str:
    return r.provider.name if r.provider is not None else "(default provider)"


def _role(domain: PolicyResource) -> str | None:
    parent = domain.parent
    while parent is not None and parent.resource_type != VM:
        parent = parent.parent
    role = parent.props.get("role") if parent is not None else None
    return role if isinstance(role, str) else None


def colocated_roles(resources: Iterable[PolicyResource]) -> list[Violation]:
    """No two mysql (nor two web) domains on one libvirt provider, i.e. one physical host."""
    seen: dict[tuple[str, str], list[PolicyResource]] = defaultdict(list)
    found = []
    for r in resources:
        if r.resource_type != DOMAIN:
            continue
        role = _role(r)
        if role is None:
            found.append(Violation(f"domain {r.name}: its Vm component exports no role, so anti-affinity "
                                   "cannot be checked", r.urn))
        elif role in EXCLUSIVE_ROLES:
            seen[(_provider_name(r), role)].append(r)
    for (provider, role), domains in sorted(seen.items()):
        if len(domains) > 1:
            domains.sort(key=lambda d: d.name)
            names = ", ".join(d.name for d in domains)
            found.append(Violation(f"{len(domains)} {role} domains on host provider {provider}: {names}; "
                                   f"losing that host would take down every {role} node", domains[-1].urn))
    return found


def spare_hosts(resources: Iterable[PolicyResource]) -> list[Violation]:
    """At least one libvirt provider (a live host) carries no domain: a spare to fail over to."""
    resources = list(resources)
    providers = {r.urn: r.name for r in resources if r.resource_type == PROVIDER}
    used = {r.provider.urn for r in resources if r.resource_type == DOMAIN and r.provider is not None}
    spares = sorted(name for urn, name in providers.items() if urn not in used)
    if spares:
        return []
    return [Violation(f"no spare host: every one of the {len(providers)} host providers "
                      f"({', '.join(sorted(providers.values())) or 'none'}) runs a domain, so a host "
                      "failure has nowhere to go")]


def autostart_off(domain: Mapping[str, Any], name: str) -> list[Violation]:
    """autostart must be explicitly false: a host that comes back must not resurrect a moved VM."""
    value = domain.get("autostart")
    if value is False:
        return []
    return [Violation(f"domain {name}: autostart is {value!r}, must be false (a host that comes back "
                      "would start a VM that now runs elsewhere)")]


def clear_secrets(props: Mapping[str, Any], secret_outputs: Iterable[str], name: str) -> list[Violation]:
    """User data holding secret material must be a secret output (encrypted in the state)."""
    if "userData" in secret_outputs:
        return []
    text = props.get("userData")
    if not isinstance(text, str):
        return []
    kinds = [kind for kind, pattern in SECRET_PATTERNS if pattern.search(text)]
    if not kinds:
        return []
    return [Violation(f"cloud-init disk {name}: user data holds {', '.join(kinds)} in clear; render it "
                      "inside pulumi.Output.secret and list userData in additional_secret_outputs")]


def _stack_policy(name: str, description: str,
                  check: Callable[[list[PolicyResource]], list[Violation]]) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        for v in check(list(args.resources)):
            report(v.message, v.urn)
    return StackValidationPolicy(name=name, description=description, validate=validate,
                                 enforcement_level=EnforcementLevel.MANDATORY)


def _validate_autostart(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == DOMAIN:
        for v in autostart_off(args.props, args.name):
            report(v.message, None)


def _validate_user_data(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type == CLOUD_INIT:
        for v in clear_secrets(args.props, args.opts.additional_secret_outputs, args.name):
            report(v.message, None)


POLICIES: tuple[Policy, ...] = (
    _stack_policy("mac-role-anti-affinity",
                  "No two mysql (nor two web) domains on one libvirt provider (host).", colocated_roles),
    _stack_policy("mac-spare-host", "At least one host runs no domain: a spare to fail over to.",
                  spare_hosts),
    ResourceValidationPolicy(name="mac-no-autostart", description="Every domain has autostart=false.",
                             validate=_validate_autostart, enforcement_level=EnforcementLevel.MANDATORY),
    ResourceValidationPolicy(name="mac-no-clear-secrets-in-user-data",
                             description="Cloud-init user data with secrets in it is a secret output.",
                             validate=_validate_user_data, enforcement_level=EnforcementLevel.MANDATORY),
)
