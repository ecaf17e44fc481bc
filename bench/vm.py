"""The vm stack's figures (root, `make engine`, `make images`): one JSON object on stdout.

- images: size per tier (MB); with `--cold`, a cold build into a temporary directory first
  (seconds per tier, what `make images` costs on a fresh machine) and the stack uses those;
- first `up`: hosts started, `pulumi up`, healthy site (from the start of `up`);
- the up that records the founding (galera-start switches to its joining command) and a no-op up;
- web1 replaced (moved to kvm3): `pulumi up`, then healthy (LB pool) from the start of the up;
- db1 replaced (moved to kvm3): `pulumi up`, then Synced (clustercheck 200) and healthy;
- where a replacement's time goes: each resource's duration as pulumi printed it, and the new
  guest's `systemd-analyze` (kernel / userspace) and slowest units;
- `down` (destroy + hosts stopped).

Goals (issue 13): a replaced VM healthy <= 90 s from the start of up; first up healthy <= 6 min.
Usage: .venv/bin/python bench/vm.py [--cold]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.topology import Role
from vmimage.build import TIERS, build
from vmsite.project import images_dir
from vmsite.site import Site, missing

GOALS = {"replaced_vm_healthy_s": 90, "first_up_healthy_s": 360}
DURATION = re.compile(r"(?P<type>\S+:\S+) (?P<name>\S+) (?P<verb>created|updated|deleted|replaced)"
                      r"(?: replacement| original)? \((?P<took>[0-9ms.]+)\)")


def seconds(text: str) -> float:
    """Pulumi's `2m17s`, `114s` or `0.51s` in seconds."""
    minutes, _, rest = text.rpartition("m") if "m" in text.rstrip("s") else ("", "", text)
    return round(float(minutes or 0) * 60 + float(rest.rstrip("s") or 0), 2)


class Steps:
    """Collects each resource's duration from pulumi's output lines."""

    def __init__(self) -> None:
        self.took: dict[str, float] = {}

    def __call__(self, line: str) -> None:
        m = DURATION.search(" ".join(line.split()))
        if m and m["verb"] != "replaced":
            key = f"{m['type'].split(':')[-1]} {m['name']} {m['verb']}"
            self.took[key] = self.took.get(key, 0.0) + seconds(m["took"])

    def slowest(self, n: int = 8) -> dict[str, float]:
        return dict(sorted(self.took.items(), key=lambda kv: -kv[1])[:n])


def guest_profile(site: Site, node: str) -> dict[str, str]:
    ip = site.topology().nodes[node].ip
    _, out = site.ssh(ip, "systemd-analyze time | head -n 1; systemd-analyze blame | head -n 6", 120)
    lines = [" ".join(line.split()) for line in out.splitlines() if line.strip()]
    return {"boot": lines[0] if lines else "", "slowest_units": "; ".join(lines[1:])}


def replace(site: Site, node: str, to_host: str, synced: bool) -> dict[str, Any]:
    site.move(node, to_host)
    steps = Steps()
    site.line_sinks[:] = [steps]
    started = time.monotonic()
    up_s = site.deploy(f"bench: {node} to {to_host}")
    if synced:
        ip = site.topology().nodes[node].ip
        while site.http(f"http://{ip}:9200/")[0] != 200:
            if time.monotonic() - started > 900:
                raise RuntimeError(f"{node} not Synced after 900 s")
            time.sleep(1)
    site.wait_healthy(timeout_s=600, every_s=1.0)
    return {"up_s": up_s, "healthy_s": round(time.monotonic() - started, 1),
            "steps_s": steps.slowest(), "guest": guest_profile(site, node)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="cold image build first (~3 min)")
    args = parser.parse_args()
    why = missing()
    if why and not (args.cold and "golden images" in why):
        print(f"bench/vm.py: {why}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"goals": GOALS}
    tmp = Path(tempfile.mkdtemp(prefix="mac-bench-vm-"))
    try:
        if args.cold:
            report["image_build"] = build(tmp / "images", TIERS)
            os.environ["MAC_IMAGES_DIR"] = str(tmp / "images")
        report["images_mb"] = {t.value: round((images_dir() / f"{t.value}.qcow2").stat().st_size / 2**20, 1)
                               for t in Role}
        site = Site(say=lambda line: print(line, file=sys.stderr, flush=True))
        try:
            first = Steps()
            site.line_sinks[:] = [first]
            started = time.monotonic()
            site.up()
            up_done = time.monotonic() - started
            healthy = site.wait_healthy(timeout_s=900, every_s=1.0)
            site.line_sinks.clear()
            report["first_up"] = {"hosts_s": site.timings.get("hosts_s"), "up_s": round(up_done, 1),
                                  "healthy_s": round(up_done + healthy, 1), "steps_s": first.slowest()}
            report["settle_up_s"] = site.deploy("bench: records the founding")
            started = time.monotonic()
            site.pulumi("up", "--stack", "vm", "--yes", "--skip-preview", "--expect-no-changes")
            report["noop_up_s"] = round(time.monotonic() - started, 1)
            report["web_replaced"] = replace(site, "web1", "kvm3", synced=False)
            report["db_replaced"] = replace(site, "db1", "kvm3", synced=True)
        finally:
            started = time.monotonic()
            site.down()
            report["down_s"] = round(time.monotonic() - started, 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
