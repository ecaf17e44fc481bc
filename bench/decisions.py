"""The watchdog's decisions on the lab's fault matrix; prints one JSON object.

Brings up the lab (root, namespaces, real daemons) and runs every row of lab/decisions.py's matrix:
a fresh `mac-watchdog run --dry-run --json-log` watches while the fault is injected, and its
decisions are read for `--window` seconds. For each row: the expected and the actual decision, the
time from the fault to the decision, and any spurious decision (every other one in the window);
then `correct`/`total`. The lab is removed at the end, also on errors.

Usage: .venv/bin/python bench/decisions.py [--window 30] [--row "db2 killed" ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.cluster import Lab
from lab.decisions import WINDOW_S, run_matrix
from lab.requirements import skip_reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=WINDOW_S,
                        help="seconds of decisions read after each fault")
    parser.add_argument("--row", action="append", help="run only this row (repeatable)")
    parser.add_argument("--stack", default="lab")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(json.dumps({"skipped": reason}))
        return 2
    lab = Lab.from_stack(args.stack)
    out: dict[str, Any] = {"window_s": args.window}
    start = time.monotonic()
    try:
        out["lab_up_s"] = round(lab.up(), 1)
        rows = [r.to_json() for r in run_matrix(lab, args.row, args.window)]
    finally:
        lab.teardown()
    out |= {"scenarios": rows, "correct": sum(r["correct"] for r in rows), "total": len(rows),
            "wall_s": round(time.monotonic() - start, 1)}
    print(json.dumps(out, indent=1))
    return 0 if out["correct"] == out["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
