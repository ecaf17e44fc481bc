"""`mac-ipmitool`: ipmitool for fence_ipmilan with the BMC password from the environment.

fence_ipmilan (ClusterLabs fence-agents) always runs `ipmitool ... -P PASSWORD ...`, so whatever
password it is given (`--password`, `--password-script`) sits in ipmitool's argv, readable by
every user in `ps` until ipmitool blanks it. Given `--ipmitool-path` pointing here and no password,
it passes `-P ''` instead; this wrapper drops that pair and runs the real ipmitool with `-E`, which
reads IPMI_PASSWORD from the environment (the watchdog's, e.g. its systemd EnvironmentFile). The
password then appears in no process's argv.

Stdlib only and no imports from the project: it starts once per ipmitool call fence_ipmilan makes.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence

PASSWORD_ENV = "IPMI_PASSWORD"
IPMITOOL = "/usr/bin/ipmitool"
EXIT_USAGE = 2


class WrapperError(Exception):
    """The call cannot be made without a password on a command line."""


def rewrite(args: Sequence[str]) -> list[str]:
    """ipmitool's arguments (argv[1:]) with `-P ''` removed and `-E` first.

    A non-empty `-P` (or -P glued to its value) means a password came in on a command line: refused,
    so a misconfigured fence line fails loudly instead of leaking the password to `ps`."""
    out: list[str] = ["-E"]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-P":
            if i + 1 >= len(args) or args[i + 1] != "":
                raise WrapperError(
                    "a BMC password was given on the command line (fence_ipmilan --password or "
                    "--password-script); remove it from the fence line and set "
                    f"{PASSWORD_ENV} in the watchdog's environment instead")
            i += 2
            continue
        if arg.startswith("-P") or arg in ("-f", "-E"):
            raise WrapperError(
                f"unexpected ipmitool option {arg[:2]!r}: mac-ipmitool takes the password from "
                f"{PASSWORD_ENV} only; remove password options from the fence line")
        out.append(arg)
        i += 1
    return out


def uses_wrapper(fence_argv: Sequence[str]) -> bool:
    """Whether a fence command runs fence_ipmilan (or a sibling agent) through mac-ipmitool."""
    for i, arg in enumerate(fence_argv):
        value = arg.split("=", 1)[1] if arg.startswith("--ipmitool-path=") else (
            fence_argv[i + 1] if arg == "--ipmitool-path" and i + 1 < len(fence_argv) else None)
        if value is not None and os.path.basename(value) == "mac-ipmitool":
            return True
    return False


def ipmitool_path() -> str:
    return shutil.which("ipmitool") or IPMITOOL


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rewritten = rewrite(args)
    except WrapperError as err:
        print(f"mac-ipmitool: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if not os.environ.get(PASSWORD_ENV):
        print(f"mac-ipmitool: error: {PASSWORD_ENV} is not set; put the BMC password in the "
              "watchdog's environment (systemd: EnvironmentFile=/etc/default/mac-watchdog, "
              "mode 0600)", file=sys.stderr)
        return EXIT_USAGE
    tool = ipmitool_path()
    try:
        os.execv(tool, [tool, *rewritten])
    except OSError as err:
        print(f"mac-ipmitool: error: cannot run {tool}: {err.strerror}; "
              "apt-get install ipmitool", file=sys.stderr)
        return 127
    return 0  # not reached: execv replaced this process


if __name__ == "__main__":
    raise SystemExit(main())
