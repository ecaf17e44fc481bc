"""Small helpers the role modules share: script sources, quoting, names."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

SCRIPTS_DIR = Path(__file__).with_name("scripts")
LIB_DIR = "/usr/local/lib/mac"  # where the stand-alone scripts go on a VM
APP_DB_NAME = "mac"
APP_DB_USER = "mac"


def script_source(name: str) -> str:
    """The text of one of `components/roles/scripts/*.py`, shipped to the VMs verbatim."""
    return (SCRIPTS_DIR / name).read_text(encoding="utf-8")


def script_path(name: str) -> Path:
    """Where the same script lives in this checkout (the lab runs it from here)."""
    return SCRIPTS_DIR / name


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def wrapper_script(argv: Sequence[str]) -> str:
    """A /usr/local/sbin entry point that runs `argv` plus any extra arguments."""
    return f"#!/bin/sh\n# written by MAC cloud-config\nexec {shell_join(argv)} \"$@\"\n"


def systemd_unit(description: str, service: Sequence[str],
                 after: Sequence[str] = ("network-online.target",)) -> str:
    """A unit file started at boot once the network is up (and after `after`), one layout for all."""
    return "\n".join([
        "[Unit]",
        f"Description={description}",
        f"After={' '.join(after)}",
        f"Wants={' '.join(after)}",
        "",
        "[Service]",
        *service,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
