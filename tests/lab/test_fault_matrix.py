"""The fault matrix on the live lab (root only; skipped otherwise): for each fault, the one decision
a real dry-run `mac-watchdog run` must make, and no other decision in the window after it.

One lab serves every row (lab/decisions.py undoes each row's faults and waits until the cluster is
whole again; a row it cannot undo rebuilds the lab). A row takes about 20 s: the watchdog's
baseline, the fault, a 12 s window, the undo. bench/decisions.py prints the same rows as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.stack_file import load_topology, stack_path
from lab.cluster import Lab
from lab.decisions import STACK, Bench, Scenario, matrix
from lab.state import REPO

pytestmark = pytest.mark.lab

ROWS = matrix(load_topology(stack_path(REPO, STACK)))


@pytest.fixture(scope="module")
def bench(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Bench:
    return Bench(lab, Path(tmp_path_factory.mktemp("decisions")))


@pytest.mark.parametrize("scenario", ROWS, ids=[row.name for row in ROWS])
def test_fault_gets_the_expected_decision_and_no_other(bench: Bench, scenario: Scenario,
                                                       record_property) -> None:
    result = bench.run(scenario)
    row = result.to_json()
    record_property("decision", row)
    print(json.dumps(row))
    assert result.error is None, row
    for phase in result.phases:
        assert phase.actual == phase.expected, row
        assert phase.spurious == [], row
