"""The drills' figures (root, `make engine`, `make images`): one JSON object per scenario on stdout.

Brings the vm stack up (or, with --running, uses the one `make vm` runs), then the scenarios in the
order of tests/vm/test_drill.py: one VM killed, the watchdog cut off, the host with db + web
powered off, its reclaim, the LB's host powered off, a second host failure without a spare.
Each object: detect_s, fenced_s, up_started_s, healthy_s (seconds from the kill), requests,
failed_requests, longest_stall_s, writes_acknowledged, writes_lost, and site_down_s for the LB's
host, with the timeline. Goals (issue 14) in the first line.
Usage: .venv/bin/python bench/drill.py [--running] [--only host]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.topology import Role
from vmsite import drill
from vmsite.site import Site, missing

GOALS = {"host_healthy_s": 120, "host_writes_lost": 0, "host_failed_requests": 0,
         "lb_site_down_s": 100, "detect_s": 4}


def emit(result: drill.DrillResult, **extra: Any) -> None:
    print(json.dumps({**result.figures(), **extra,
                      "timeline": [[s, what] for s, what in sorted(result.timeline)]}), flush=True)


def scenarios(site: Site, only: str | None) -> None:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if only in (None, "vm"):
        emit(drill.vm_drill(site, "web2", say=say))
    if only in (None, "isolated"):
        result = drill.isolation_drill(site, watch_s=20, say=say)
        emit(result, acted=bool(result.journal))
    if only in (None, "host"):
        emit(drill.host_drill(site, drill.victim_host(site.topology()), say=say))
    if only is None:
        failed = site.topology().failed_hosts[0]
        started = time.monotonic()
        done = drill.reclaim(site, failed)
        print(json.dumps({"scenario": "reclaim", "host": failed, "ok": done.returncode == 0,
                          "took_s": round(time.monotonic() - started, 1)}), flush=True)
        lb = site.topology().nodes_of(Role.LB)[0]
        emit(drill.host_drill(site, lb.host, scenario="lb-host", say=say))
        result = drill.no_spare_drill(site, drill.victim_host(site.topology()), watch_s=20, say=say)
        emit(result, acted=bool(result.journal))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", action="store_true", help="use the vm stack `make vm` runs")
    parser.add_argument("--only", choices=("vm", "isolated", "host"), default=None)
    args = parser.parse_args()
    why = missing()
    if why:
        print(f"bench/drill.py: {why}", file=sys.stderr)
        return 2
    print(json.dumps({"goals": GOALS}), flush=True)
    site = Site(say=lambda line: print(line, file=sys.stderr, flush=True))
    if args.running:
        scenarios(site, args.only)
        return 0
    try:
        site.up()
        site.wait_healthy(timeout_s=900)
        scenarios(site, args.only)
    finally:
        site.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
