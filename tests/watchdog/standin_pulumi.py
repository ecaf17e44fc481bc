"""A STAND-IN for the `pulumi` CLI, for tests only: it records argv and answers like the CLI.

It deploys nothing. Installed as ROOT/bin/pulumi by `install()`; everything it knows lives in ROOT:
  argv.jsonl     one JSON list per call (what the Automation API sent)
  env.jsonl      the names of its environment variables, one JSON list per call
  state.json     the stack's exported state (`stack export` prints it, `stack import` replaces it)
  behaviour.json optional knobs: {"up_fail": N} fail the next N `up`s; {"locked": N} answer the
                 next N `up`s with "the stack is currently locked by"; {"up_sleep": S}; {"import_fail": N};
                 {"missing_stack": true} -> `stack select` says "no stack named".
  counters.json  how many times each knob fired
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

VERSION = "v3.272.0"


def _load(path: Path, default: object) -> object:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return default


def _take(root: Path, knob: str) -> bool:
    """Consume one firing of a counted knob; True when it fires."""
    behaviour = _load(root / "behaviour.json", {})
    assert isinstance(behaviour, dict)
    counters = _load(root / "counters.json", {})
    assert isinstance(counters, dict)
    used = counters.get(knob, 0)
    if used < int(behaviour.get(knob, 0)):
        counters[knob] = used + 1
        (root / "counters.json").write_text(json.dumps(counters))
        return True
    return False


def _stack(argv: list[str]) -> str:
    return argv[argv.index("--stack") + 1] if "--stack" in argv else "dev"


def main(argv: list[str], root: Path) -> int:
    with open(root / "argv.jsonl", "a") as log:
        log.write(json.dumps(argv) + "\n")
    with open(root / "env.jsonl", "a") as log:  # the names of its environment, per call
        log.write(json.dumps(sorted(os.environ)) + "\n")
    args = [a for a in argv if a != "--non-interactive"]
    behaviour = _load(root / "behaviour.json", {})
    assert isinstance(behaviour, dict)
    if args[:1] == ["version"]:
        print(VERSION)
        return 0
    if args[:2] == ["stack", "select"]:
        if behaviour.get("missing_stack"):
            print(f"error: no stack named '{_stack(args)}' found", file=sys.stderr)
            return 255
        return 0
    if args[:2] == ["stack", "export"]:
        print(json.dumps(_load(root / "state.json", {"version": 3, "deployment": {}})))
        return 0
    if args[:2] == ["stack", "import"]:
        if _take(root, "import_fail"):
            print("error: could not deserialize deployment: bad resource", file=sys.stderr)
            return 255
        src = Path(args[args.index("--file") + 1])
        (root / "state.json").write_text(src.read_text())
        return 0
    if args[:1] == ["up"]:
        if _take(root, "locked"):
            print("error: the stack is currently locked by 1 lock(s). Either wait for the other "
                  "process(es) to end or delete the lock file with `pulumi cancel`.", file=sys.stderr)
            return 255
        with open(root / "ups.jsonl", "a") as ups:
            ups.write(json.dumps({"argv": args, "started": time.time()}) + "\n")
        print("Updating (standin):")
        time.sleep(float(behaviour.get("up_sleep", 0)))
        if _take(root, "up_fail"):
            print("error: update failed: libvirt: dial tcp 10.0.0.11:22: connect: no route to host",
                  file=sys.stderr)
            return 255
        print("Resources:\n    5 unchanged")
        return 0
    if args[:3] == ["stack", "output", "--json"]:
        print("{}")
        return 0
    if args[:3] == ["stack", "history", "--json"]:
        print(json.dumps([{"kind": "update", "startTime": "2026-11-26T08:00:00.000Z", "message": "",
                           "environment": {}, "config": {}, "result": "succeeded",
                           "endTime": "2026-11-26T08:00:01.000Z", "resourceChanges": {"same": 5}}]))
        return 0
    if args[:1] == ["config"]:
        print("{}" if "--json" in args else "")
        return 0
    if args[:1] == ["whoami"]:
        print("standin")
        return 0
    print(f"error: the stand-in pulumi does not know `{' '.join(args)}`", file=sys.stderr)
    return 2


def install(root: Path, python: str = sys.executable) -> Path:
    """Make ROOT/bin/pulumi run this stand-in with `python`; returns the executable's path."""
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    exe = bin_dir / "pulumi"
    exe.write_text(f"#!{python} -S\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                   "import os, pathlib, standin_pulumi\n"
                   "root = pathlib.Path(os.path.realpath(__file__)).parent.parent\n"
                   "sys.exit(standin_pulumi.main(sys.argv[1:], root))\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], Path(os.environ.get("STANDIN_PULUMI_ROOT", "."))))
