"""Golden images: build time and size per tier, cold and no-op, and boot-to-service per tier (root).

Cold builds into a new directory (the cached images in .images/ stay as they are), builds again
there (the no-op rebuild: stamps unchanged), then boots one VM per tier at once from those images
with the ci stack's cloud-config (vmimage/boot.py: namespace, TCG, the same checks as
tests/vm/test_images.py) and prints one JSON object. `--images DIR` skips the cold build and
measures the no-op rebuild and the boots on DIR.

Usage: .venv/bin/python bench/images.py [--images .images] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.roles import Secrets
from components.stack_file import load_topology, stack_path
from vmimage import boot
from vmimage.build import TIERS, build

REPO = Path(__file__).resolve().parents[1]
NODES = ("db1", "web1", "lb1")


def boots(images_dir: Path, work: Path) -> dict[str, Any]:
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    topology = load_topology(stack_path(REPO, "ci"))
    topology = dataclasses.replace(topology, ssh_public_key=(work / "id_ed25519.pub").read_text().strip())
    secrets = Secrets(db_root_password="bench-root", db_app_password="bench-app")
    with boot.Namespace(topology.network, f"mac-bench-{os.getpid()}") as ns:
        started = [boot.start(ns, topology.nodes[n], topology, secrets, work / n, f"tap{i}", images_dir)
                   for i, n in enumerate(NODES)]
        try:
            with ThreadPoolExecutor(len(started)) as pool:
                checks = list(pool.map(lambda b: boot.check_role(ns, b, key, topology.ssh_user), started))
        finally:
            for b in started:
                b.stop()
    return {c.role: {"node": c.node, **c.timings, "problems": c.problems} for c in checks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="use these images (no cold build)")
    parser.add_argument("--keep", type=Path, help="keep the cold build's images here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/images.py needs root (mmdebstrap, namespaces, qemu)", file=sys.stderr)
        return 2
    report: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="mac-bench-images-", dir=REPO / ".images"
                                if (REPO / ".images").is_dir() else None))
    try:
        images_dir = args.images.resolve() if args.images else (args.keep or tmp / "images").resolve()
        if not args.images:
            report["cold"] = build(images_dir, TIERS)
        started = time.monotonic()
        report["noop"] = build(images_dir, TIERS)
        report["noop"]["seconds"] = round(time.monotonic() - started, 2)
        report["boot"] = boots(images_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
