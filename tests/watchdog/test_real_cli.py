"""The failover pipeline against the REAL Pulumi CLI (local file backend, no cloud, no hosts).

Runs when `pulumi` is on PATH or built into .engine/bin (`make engine`); skips otherwise. Fence is
faked (there is no BMC); export -> prune -> import and the stack file write are real; `up` runs
the real program, which cannot reach the loopback "hosts", so it must fail the way a dead cluster
makes it fail: the written change is kept and the journal waits at `up` for a retry.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto

from components.stack_file import load_topology, stack_path
from components.topology import Host, Topology
from tests.watchdog.conftest import REPO
from tests.watchdog.state_fixture import STACK, exported
from watchdog.alert import Alerter
from watchdog.deploy import Deployer
from watchdog.detect import Failures
from watchdog.errors import DeployFailed
from watchdog.fence import FenceResult
from watchdog.journal import Journal
from watchdog.plan import Step, plan
from watchdog.remediate import Remediator
from watchdog.state import urn_name

ENGINE = REPO / ".engine"


def _pulumi_root() -> Path | None:
    if (ENGINE / "bin" / "pulumi").exists():
        return ENGINE
    found = shutil.which("pulumi")
    return Path(found).resolve().parent.parent if found else None


ROOT = _pulumi_root()
pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(ROOT is None, reason="the real Pulumi CLI is not installed (no `pulumi` on "
                       "PATH and no .engine/bin/pulumi; `make engine` builds it)"),
]


def _importable(state: dict, real: Mapping[str, Any]) -> dict:
    """The fixture's resources in the real stack's envelope (manifest with its magic cookie,
    secrets provider), without values a real CLI would try to decrypt."""
    state = copy.deepcopy(state)
    for key in ("manifest", "secrets_providers"):
        if key in real:
            state["deployment"][key] = real[key]
        else:
            state["deployment"].pop(key, None)
    state["deployment"]["pending_operations"] = []
    for r in state["deployment"]["resources"]:
        if r["type"] == "command:remote:Command":
            r.pop("inputs", None)
    return state


def test_real_cli_failover_prunes_state_writes_config_and_keeps_it_when_up_fails(
        project: Path, topology: Topology, tmp_path: Path) -> None:
    assert ROOT is not None
    env = {"PULUMI_BACKEND_URL": f"file://{tmp_path / 'backend'}",
           "PULUMI_CONFIG_PASSPHRASE": "not-a-secret-test-passphrase",
           "PULUMI_SKIP_UPDATE_CHECK": "true"}
    (tmp_path / "backend").mkdir()
    command = auto.PulumiCommand(root=str(ROOT))
    options = auto.LocalWorkspaceOptions(work_dir=str(project), pulumi_command=command, env_vars=env)
    stack = auto.create_stack(STACK, work_dir=str(project), opts=options)
    real = stack.export_stack().deployment or {}
    stack.import_stack(auto.Deployment(version=3, deployment=_importable(exported(), real)["deployment"]))

    def fencer(host: Host, timeout_s: float) -> FenceResult:
        return FenceResult(host.name, skipped=False, returncode=0)

    deployer = Deployer(project, STACK, pulumi_root=ROOT, env=env, lock_retries=0)
    journal = Journal(tmp_path / "state")
    remediator = Remediator(stack_file=stack_path(project, STACK), state_dir=tmp_path / "state",
                            backend=deployer, journal=journal, alerter=Alerter(None, STACK),
                            verifier=lambda t, nodes, timeout: [], fencer=fencer, up_attempts=1)
    p = plan(topology, Failures(hosts=("kvm1",)))
    with pytest.raises(DeployFailed) as failed:
        remediator.execute(p, "real-cli-test")
    print(f"up failed as expected here: {failed.value}")

    left = (stack.export_stack().deployment or {})["resources"]
    providers = {urn_name(r["urn"]) for r in left if r["type"] == "pulumi:providers:libvirt"}
    assert providers == {"kvm2", "kvm3", "spare1"}
    assert not [r for r in left if urn_name(r["urn"]) in ("db1-domain", "web1-domain", "kvm1-pool")]
    assert load_topology(stack_path(project, STACK)).failed_hosts == ("kvm1",)
    pending = journal.pending()
    assert pending is not None and pending.next_step is Step.UP
