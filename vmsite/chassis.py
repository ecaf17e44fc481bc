"""The chassis control program of a simulated BMC (ipmi_sim's `chassis_control`).

ipmi_sim runs, through a shell, `<this> CONFIG get power` (expects `power:1` or `power:0`) and
`<this> CONFIG set power "0"|"1"` (expects no output and exit 0). CONFIG is the BMC's JSON file
(vmsite/bmc.py writes it) holding the host's power actions as argv lists:

  on, off   run to power the host on or off; exit 0 = done
  status    prints `on` or `off`; anything else (or a non-zero exit) is an error, never "off":
            a BMC that reports a host off when it does not know would let a fence pass falsely

Actions run without a shell, stdin /dev/null, in a session of their own (stopping the BMC must not
stop the host), output appended to the BMC's log (never to ipmi_sim's pipe: a daemon that power-on
leaves running would hold it open and hang the BMC), with a timeout.
Other chassis requests (reset, boot device, soft shutdown, identify) are refused (exit 1; the BMC
answers with an error). Run by path from ipmi_sim, so stdlib only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

ACTION_TIMEOUT_S = 30.0


class ChassisError(Exception):
    """Printed to stdout, which ipmi_sim logs, and exit 1."""


def _config(path: str) -> dict[str, object]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ChassisError(f"cannot read the BMC config {path}: {err}") from None
    if not isinstance(data, dict):
        raise ChassisError(f"BMC config {path} is not a JSON object")
    return data


def _argv(config: dict[str, object], action: str) -> list[str]:
    argv = config.get(action)
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ChassisError(f"BMC config has no `{action}` command (a list of strings)")
    return argv


def _log(config: dict[str, object], line: str) -> None:
    log = config.get("log")
    if isinstance(log, str):
        with open(log, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")


def _run(argv: list[str], stdout: IO[str] | int, what: str) -> tuple[int, str]:
    """Run an action in a session of its own: what it starts (a host's daemons) is outside the
    BMC's process group, so stopping the BMC never takes the host with it. On timeout its whole
    group is killed."""
    try:
        stderr = subprocess.DEVNULL if stdout == subprocess.PIPE else subprocess.STDOUT
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                text=True, start_new_session=True)
    except OSError as err:
        raise ChassisError(f"{what} command cannot start: {err}") from None
    try:
        out, _ = proc.communicate(timeout=ACTION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise ChassisError(f"{what} command did not finish within {ACTION_TIMEOUT_S:g} s") from None
    return proc.returncode, out or ""


def power_status(config: dict[str, object]) -> int:
    argv = _argv(config, "status")
    rc, stdout = _run(argv, subprocess.PIPE, "power status")
    words = stdout.split()
    if rc != 0 or not words or words[0] not in ("on", "off"):
        raise ChassisError(f"power status command exited {rc} and printed "
                           f"{stdout.strip()[:80]!r}; it must print `on` or `off`")
    return 1 if words[0] == "on" else 0


def set_power(config: dict[str, object], value: str) -> None:
    action = {"0": "off", "1": "on"}.get(value.strip('"'))
    if action is None:
        raise ChassisError(f"invalid power value {value!r}")
    argv = _argv(config, action)
    _log(config, f"power {action}: {argv[0]}")
    log = config.get("log")
    with open(log if isinstance(log, str) else "/dev/null", "a") as out:
        rc, _ = _run(argv, out, f"power {action}")
    _log(config, f"power {action}: exit {rc}")
    if rc != 0:
        raise ChassisError(f"power {action} command exited {rc}")


def run(args: Sequence[str]) -> str:
    """Handle one call; what to print on success."""
    if len(args) < 2:
        raise ChassisError("usage: chassis.py CONFIG get|set|check PARAMS...")
    config, op, params = _config(args[0]), args[1], list(args[2:])
    if op == "get":
        lines = []
        for param in params:
            if param != "power":
                raise ChassisError(f"chassis parameter {param!r} is not supported")
            lines.append(f"power:{power_status(config)}")
        return "\n".join(lines)
    if op == "set":
        if len(params) % 2:
            raise ChassisError(f"no value for parameter {params[-1]!r}")
        for param, value in zip(params[::2], params[1::2], strict=True):
            if param != "power":
                raise ChassisError(f"chassis parameter {param!r} is not supported")
            set_power(config, value)
        return ""
    raise ChassisError(f"operation {op!r} is not supported")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        out = run(sys.argv[1:] if argv is None else argv)
    except ChassisError as err:
        print(err)
        return 1
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
