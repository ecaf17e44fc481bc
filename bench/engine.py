"""What the real engine and MAC's provider plugins cost on the ci stack; prints one JSON object.

Starts four local libvirtd "hosts" (root; `make engine` and the libvirt packages needed), then
runs the ci stack's scenario of tests/engine: first `up`, no-op `up`, moving one node to another
host, a `refresh` after an undefine behind Pulumi's back (and the `up` that repairs it), and
`destroy`; wall seconds of each. Then the rate of a 256 MiB Volume `source` upload (the pool
created in the same `up`). Adds the build figures `make engine` recorded (seconds and binary
size of every piece). Everything it starts is stopped at the end, also on errors.

Usage: .venv/bin/python bench/engine.py [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.engine.conftest import (
    ENGINE,
    LOCAL_HOSTS,
    PLUGINS,
    PROGRAM_PROVIDERS,
    TEST_BRIDGE,
    Pulumi,
    copy_project,
    engine_missing,
    provider_missing,
)
from tests.engine.test_engine_basics import write_project
from tests.engine.test_mac_program import run_ci_scenario
from vmsite.hypervisor import Host, local_hosts, missing


def build_figures() -> dict[str, Any]:
    out = {}
    for report in sorted((ENGINE / "report").glob("pulumi*.json")):
        r = json.loads(report.read_text())
        out[r["piece"]] = {"build_s": r["seconds"], "binary_mib": round(r["binary_bytes"] / 2**20, 1)}
    return out


UPLOAD_MIB = 256


def upload_rate(work: Path, host: Host) -> float:
    """MiB/s of a Volume `source` upload (a raw file of UPLOAD_MIB MiB) through our plugin."""
    image = work / "upload.raw"
    with image.open("wb") as f:
        for _ in range(UPLOAD_MIB):
            f.write(os.urandom(2**20))
    project = work / "upload"
    program = f"""import pulumi, pulumi_libvirt as lv
p = lv.Provider("h", uri={host.uri!r})
on = pulumi.ResourceOptions(provider=p)
pool = lv.Pool("pool", name="upload", type="dir",
               target=lv.PoolTargetArgs(path={str(host.pool_root / "upload")!r}), opts=on)
lv.Volume("img", name="upload.raw", pool=pool.name, source={str(image)!r}, opts=on)
"""
    write_project(project, program)
    home, backend = work / "upload-home", work / "upload-backend"
    home.mkdir()
    backend.mkdir()
    (home / "plugins").symlink_to(PLUGINS)
    p = Pulumi(project, home, backend)
    p.run("stack", "init", "upload")
    t0 = time.monotonic()
    p.run("up", "--yes", "--skip-preview")
    seconds = time.monotonic() - t0
    p.run("destroy", "--yes", "--skip-preview")
    return round(UPLOAD_MIB / seconds, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="scenario runs (medians reported)")
    args = parser.parse_args()
    why = engine_missing() or provider_missing(*PROGRAM_PROVIDERS) or missing()
    if why:
        print(json.dumps({"error": why}))
        return 2
    work = Path(tempfile.mkdtemp(prefix="mac-bench-engine-"))
    runs: list[dict[str, float]] = []
    try:
        with local_hosts(work / "hosts", LOCAL_HOSTS, TEST_BRIDGE) as hosts:
            for i in range(args.runs):
                project = copy_project(work / f"run{i}" / "mac", stacks=["ci"])
                home, backend = work / f"run{i}" / "home", work / f"run{i}" / "backend"
                home.mkdir()
                backend.mkdir()
                (home / "plugins").symlink_to(PLUGINS)
                runs.append(run_ci_scenario(project, Pulumi(project, home, backend), hosts))
            upload = upload_rate(work, hosts["h1"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ci = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(json.dumps({"ci_stack": ci, "runs": len(runs), "nodes": 5, "hosts": len(hosts),
                      "volume_upload_mib_s": upload, "upload_mib": UPLOAD_MIB,
                      "build": build_figures()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
