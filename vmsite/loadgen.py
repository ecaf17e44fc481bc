"""`python -m vmsite.loadgen URL RATE OUT`: lab/load.py's open-loop load, run as its own process
inside the vm stack's namespace (`ip netns exec`, as everything that talks to VM addresses runs).
Sends until SIGTERM, then lets the requests in flight finish and writes every outcome to OUT
(JSON, atomically). `sent`/`done` are CLOCK_MONOTONIC seconds: comparable with the caller's.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from types import FrameType

from components.stack_file import atomic_write_text
from lab.load import Load, LoadReport, Outcome

LONGEST_S = 3600.0  # a run is stopped by SIGTERM long before this


def read_report(path: Path) -> LoadReport:
    """What a finished loadgen wrote to `path`."""
    data = json.loads(path.read_text())
    return LoadReport([Outcome(**o) for o in data["outcomes"]], float(data["started"]))


def main(argv: list[str] | None = None) -> int:
    url, rate, out = (argv or sys.argv[1:])[:3]
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    load = Load(url, float(rate), LONGEST_S, workers=16, timeout_s=10.0)
    load.start()
    print("started", flush=True)
    while not stop.wait(0.5):
        pass
    load.stop()
    report = load.join()
    atomic_write_text(Path(out), json.dumps({"started": report.started,
                                             "outcomes": [asdict(o) for o in report.outcomes]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
