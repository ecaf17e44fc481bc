"""The PR-review workflow (.github/workflows/preview.yml): actionlint-clean, and it previews what
the README says (tests, validate, one `pulumi preview` per deployed stack with the policy pack)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.harness import PROJECT_DIR

WORKFLOW = PROJECT_DIR / ".github" / "workflows" / "preview.yml"


def actionlint() -> str:
    built = PROJECT_DIR / ".tools" / "bin" / "actionlint"
    found = str(built) if built.exists() else shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint is not built: run `make tools` (builds rhysd/actionlint from its Go module)")
    return found


def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def test_actionlint_passes() -> None:
    done = subprocess.run([actionlint(), "-no-color", str(WORKFLOW)], capture_output=True, text=True,
                          cwd=PROJECT_DIR, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_copy(tmp_path: Path) -> None:
    """The lint is real: a typo in an expression and an unknown input fail it."""
    broken = WORKFLOW.read_text().replace("needs.test.outputs.stacks) }}", "needs.tests.outputs.stacks) }}")
    broken = broken.replace("comment-on-pr: true", "comment-on-pr: true\n          no-such-input: 1")
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    copy = tmp_path / ".github" / "workflows" / "preview.yml"
    copy.write_text(broken)
    done = subprocess.run([actionlint(), "-no-color", str(copy)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "needs.tests" in done.stdout or "tests" in done.stdout


def test_previews_every_deployed_stack_with_the_policy_pack() -> None:
    jobs = workflow()["jobs"]
    test_steps = " ".join(str(s.get("run", "")) for s in jobs["test"]["steps"])
    assert "pytest" in test_steps and "mac-watchdog validate" in test_steps
    preview = jobs["preview"]
    assert preview["needs"] == "test"
    [step] = [s for s in preview["steps"] if str(s.get("uses", "")).startswith("pulumi/actions@")]
    args = step["with"]
    assert args["command"] == "preview"
    assert args["stack-name"] == "${{ matrix.stack }}"
    assert args["comment-on-pr"] is True
    assert args["policyPacks"] == "policy"
    assert (PROJECT_DIR / args["policyPacks"] / "PulumiPolicy.yaml").exists()
    assert args["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"  # self-managed, no Pulumi Cloud
    assert "PULUMI_ACCESS_TOKEN" not in WORKFLOW.read_text()


def test_the_matrix_is_the_deployed_stack_files() -> None:
    """Run the workflow's own stack-listing script: dev and prod, not the lab nor ci."""
    [step] = [s for s in workflow()["jobs"]["test"]["steps"] if s.get("id") == "stacks"]
    script = step["run"].split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    env = {**os.environ, "LOCAL_ONLY_STACKS": workflow()["env"]["LOCAL_ONLY_STACKS"]}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                          cwd=PROJECT_DIR, env=env, timeout=30, check=True)
    stacks = json.loads(done.stdout)
    assert stacks == sorted(p.name.split(".")[1] for p in (PROJECT_DIR / "stacks").glob("Pulumi.*.yaml")
                            if p.name.split(".")[1] not in ("lab", "ci"))
    assert {"dev", "prod"} <= set(stacks)

