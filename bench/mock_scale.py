"""How the Pulumi program scales under mocks: evaluation time and memory per VM, as JSON.

Runs the real `__main__.py` through the unit tests' mock harness for the prod stack and for
generated stacks with many web nodes (one host each: anti-affinity). Each scenario runs in a
fresh interpreter; time is the median of several evaluations, memory is the tracemalloc peak
of one more evaluation (Python allocations made while evaluating, after a warm-up run).

Usage: .venv/bin/python bench/mock_scale.py [--nodes 50 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]


def generated_config(webs: int) -> dict[str, Any]:
    """A valid stack config: 2 DB + 1 LB + `webs` web nodes, a host per web node, one spare."""
    def ip(i: int) -> str:
        return f"10.64.{i // 200}.{i % 200 + 10}"

    hosts = {f"h{i}": {"uri": f"qemu+ssh://root@10.63.{i // 200}.{i % 200 + 10}/system",
                       "address": f"10.63.{i // 200}.{i % 200 + 10}"} for i in range(webs + 1)}
    nodes: dict[str, Any] = {
        "db1": {"role": "mysql", "host": "h0", "ip": ip(0)},
        "db2": {"role": "mysql", "host": "h1", "ip": ip(1)},
        "lb1": {"role": "lb", "host": "h2", "ip": ip(2)},
    }
    for i in range(webs):
        nodes[f"web{i}"] = {"role": "web", "host": f"h{i}", "ip": ip(i + 3)}
    return {
        "network": {"bridge": "br0", "cidr": "10.64.0.0/16", "gateway": "10.64.0.1"},
        "image": {"source": "/srv/images/debian-12-genericcloud-amd64.qcow2"},
        "hosts": hosts,
        "spares": [f"h{webs}"],
        "failedHosts": [],
        "nodes": nodes,
    }


def measure(scenario: str, repeat: int) -> dict[str, Any]:
    """Run in the child: evaluate the scenario `repeat` times, then once under tracemalloc."""
    sys.path.insert(0, str(PROJECT_DIR))
    from tests.unit.harness import evaluate, stack_config

    if scenario == "prod":
        config = stack_config("prod")
    else:
        config = generated_config(int(scenario.removeprefix("generated-")))
    evaluate("bench", config)  # warm-up: imports, lazy modules, caches
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = evaluate("bench", config)
        seconds.append(time.perf_counter() - start)
    tracemalloc.start()
    evaluate("bench", config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    vms = len(config["nodes"])
    median = statistics.median(seconds)
    return {
        "scenario": scenario,
        "vms": vms,
        "hosts": len(config["hosts"]),
        "resources": len(result.resources),
        "evaluation_s": round(median, 3),
        "ms_per_vm": round(1000 * median / vms, 2),
        "peak_alloc_mib": round(peak / 2**20, 1),
        "kib_per_vm": round(peak / 1024 / vms, 1),
        "runs": repeat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[50, 200],
                        help="web node counts of the generated stacks")
    parser.add_argument("--repeat", type=int, default=3, help="timed evaluations per scenario")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one scenario
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeat)))
        return
    results = []
    for scenario in ["prod", *(f"generated-{n}" for n in args.nodes)]:
        child = subprocess.run(
            [sys.executable, __file__, "--one", scenario, "--repeat", str(args.repeat)],
            check=True, capture_output=True, text=True, cwd=PROJECT_DIR,
        )
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    print(json.dumps({"benchmark": "mock_scale", "python": sys.version.split()[0],
                      "scenarios": results}, indent=2))


if __name__ == "__main__":
    main()
