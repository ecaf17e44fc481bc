"""The golden images boot MAC's own cloud-config and serve their role (root, qemu TCG).

One VM per tier (db1, web1, lb1 of the ci stack, booted together) from `make images`, each with a
fresh overlay and a NoCloud seed of what components.roles renders for that node; everything is
checked from inside a network namespace the test makes (vmimage/boot.py): the static IP answers
ICMP, sshd its banner, cloud-init finished cleanly, the role's units are as its cloud-config left
them and its service answers (web: /health.php runs PHP and says 503, no DB; lb: HAProxy's stats
list the web servers; mysql: clustercheck answers, and `mac-galera-start --first-deploy` founds a
one-node cluster that clustercheck then reports Synced, and lb1's mac-garbd joins it: cluster size 2).
Console logs stay in pytest's tmp dir.

Without root the tests skip. Without images they skip too, unless MAC_VM_TESTS=required (.ci/run,
which builds the images first): then they fail.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from components.topology import Role
from vmimage import boot

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]


def _skip_or_fail() -> None:
    if os.geteuid() != 0:
        pytest.skip("the VM tests need root (network namespace, tap, qemu)")
    missing = boot.missing_images([r.value for r in Role])
    if missing:
        message = f"no golden images ({', '.join(map(str, missing[:3]))}): run `make images` as root"
        if os.environ.get("MAC_VM_TESTS") == "required":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, boot.RoleCheck]:
    _skip_or_fail()
    work = tmp_path_factory.mktemp("vm")
    started = time.monotonic()
    results, boots = boot.boot_tiers(work)
    print(f"\nVM boot checks ({len(boots)} VMs at once, {time.monotonic() - started:.0f} s):")
    for result in results:
        print(json.dumps({"node": result.node, "role": result.role, **result.timings}))
        print(result.seen.get("boot-profile", ""))
    for b in boots:
        print(f"--- {b.node.name} console ({b.console}) ---\n{b.console_tail(15)}")
    return {r.role: r for r in results}


def _assert_ok(result: boot.RoleCheck, work_hint: str) -> None:
    assert not result.problems, (
        f"{result.node} ({result.role}): " + "\n".join(result.problems)
        + f"\nseen: {json.dumps(result.seen, indent=1)[:3000]}\n(console log under {work_hint})")


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_tier_image_boots_and_serves_its_role(checks: dict[str, boot.RoleCheck], role: str,
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    result = checks[role]
    _assert_ok(result, str(tmp_path_factory.getbasetemp()))
    for step in ("ip", "ssh", "service", "cloud_init_done"):
        assert step in result.timings, result.timings
    if role == Role.MYSQL.value:
        assert "synced" in result.timings, result.seen
    if role == Role.LB.value:
        assert "garbd_joined" in result.timings, result.seen  # db1's wsrep_cluster_size reached 2
