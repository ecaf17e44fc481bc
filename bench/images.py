"""Golden images: build time and size per tier, cold and no-op, and boot-to-service per tier (root).

Cold builds into a new directory (the cached images in .images/ stay as they are), builds again
there (the no-op rebuild: stamps unchanged), then boots one VM per tier at once from those images
with the ci stack's cloud-config (vmimage/boot.py: namespace, TCG, plain qemu; each tier's IP,
sshd, cloud-init, units and service) and prints one JSON object. `--images DIR` skips the cold build and
measures the no-op rebuild and the boots on DIR.

Usage: .venv/bin/python bench/images.py [--images .images] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmimage import boot
from vmimage.build import TIERS, build

REPO = Path(__file__).resolve().parents[1]


def boots(images_dir: Path, work: Path) -> dict[str, Any]:
    checks, _ = boot.boot_tiers(work, images_dir)
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
