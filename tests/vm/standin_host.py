"""A stand-in host for the BMC tests: what a host's power actions do, without libvirtd or qemu.

`on DIR NETNS LINK ADDRESS` starts three `sleep` processes in a process group of their own (the
host's "daemons") and adds ADDRESS/24 (its management address) to LINK in NETNS; `off ...` kills
that group with SIGKILL and removes the address, at once, as a power cut does; `status DIR`
prints `on` or `off`. The group id is kept in DIR/pgid. Run by path (ipmi_sim's chassis program
runs it), so stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

DAEMONS = 3


def members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    return bool(members(pgid))


def recorded(directory: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((directory / "pgid").read_text())
    return None


def power_on(directory: Path, netns: str, link: str, address: str) -> None:
    pgid = recorded(directory)
    if pgid is not None and group_alive(pgid):
        return
    script = "sleep 100000 & " * (DAEMONS - 1) + "exec sleep 100000"
    first = subprocess.Popen(["sh", "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    (directory / "pgid").write_text(f"{first.pid}\n")
    subprocess.run(["ip", "-n", netns, "addr", "replace", f"{address}/24", "dev", link], check=True)


def power_off(directory: Path, netns: str, link: str, address: str) -> None:
    pgid = recorded(directory)
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    subprocess.run(["ip", "-n", netns, "addr", "del", f"{address}/24", "dev", link], check=False,
                   stderr=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    action, directory = argv[0], Path(argv[1])
    if action == "status":
        pgid = recorded(directory)
        print("on" if pgid is not None and group_alive(pgid) else "off")
        return 0
    netns, link, address = argv[2:5]
    {"on": power_on, "off": power_off}[action](directory, netns, link, address)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
