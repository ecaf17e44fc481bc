"""A vm stack host's power, as its BMC switches it (vmsite/bmc.py: ipmi_sim's chassis program runs
`python -m vmsite.power on|off|status ...`) and as the drills cut it (vmsite/drill.py).

- `off`: like losing power, everything at once: the host's libvirtd, virtlogd, qemu processes and
  sshd SIGKILLed (found by their PID files in the host's directory) and its management address
  removed from its bridge. Its domains stay defined (persistent, shut off), as on a real disk.
- `on`: the address back, libvirtd + virtlogd and the sshd started again (daemons left running,
  found by their PID files later). Domains are not started: the program sets autostart=False,
  so a host coming back never starts VMs that now run elsewhere.
- `status`: `on` while its libvirtd runs, else `off`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
from pathlib import Path

from vmsite import hypervisor, net, sshd


def _pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def host_pids(host_dir: Path) -> dict[str, int]:
    """The host's live processes by role (libvirtd, virtlogd, sshd, qemu:<domain>)."""
    found = {"libvirtd": _pid(host_dir / "libvirtd.pid"), "virtlogd": _pid(host_dir / "virtlogd.pid"),
             "sshd": _pid(host_dir / "sshd" / "sshd.pid")}
    for pid_file in (host_dir / "run" / "qemu").glob("*.pid"):
        found[f"qemu:{pid_file.stem}"] = _pid(pid_file)
    return {k: v for k, v in found.items() if v is not None and alive(v)}


def is_on(host_dir: Path) -> bool:
    return "libvirtd" in host_pids(host_dir)


def power_off(host_dir: Path, netns: str, bridge: str, address: str) -> list[int]:
    """Kill every process of the host (SIGKILL, no warning) and remove its address; the PIDs."""
    pids = list(host_pids(host_dir).values())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    subprocess.run(["ip", "-n", netns, "addr", "del", address, "dev", bridge], check=False,
                   capture_output=True)
    for stale in ("libvirtd.pid", "virtlogd.pid", "run/libvirt-sock"):
        (host_dir / stale).unlink(missing_ok=True)
    return pids


def power_on(host_dir: Path, name: str, netns: str, bridge: str, address: str, key: Path) -> None:
    """The address back, then libvirtd + virtlogd and the sshd (no-op for what already runs)."""
    subprocess.run(["ip", "-n", netns, "addr", "replace", address, "dev", bridge], check=True,
                   capture_output=True)
    pids = host_pids(host_dir)
    if "libvirtd" not in pids:
        for orphan in ("virtlogd", *[k for k in pids if k.startswith("qemu:")]):
            if orphan in pids:  # a half-dead host: start from nothing, as a real boot does
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pids[orphan], signal.SIGKILL)
        hypervisor.Host(name, host_dir, netns=netns).start()
    if "sshd" not in pids:
        sshd.start(host_dir / "sshd", address=address.split("/")[0], port=22, netns=netns,
                   client_key=key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmsite.power", description=__doc__)
    parser.add_argument("action", choices=("on", "off", "status"))
    parser.add_argument("host_dir", type=Path)
    parser.add_argument("--name", default="")
    parser.add_argument("--netns", default="")
    parser.add_argument("--bridge", default="")
    parser.add_argument("--address", default="", help="ADDRESS/PREFIX on the host's bridge")
    parser.add_argument("--key", type=Path, default=None, help="the client key its sshd lets in")
    args = parser.parse_args(argv)
    if args.action == "status":
        print("on" if is_on(args.host_dir) else "off")
        return 0
    if not (args.netns and args.bridge and args.address):
        parser.error("on/off need --netns, --bridge and --address")
    if args.action == "off":
        power_off(args.host_dir, args.netns, args.bridge, args.address)
        return 0
    if not (args.name and args.key):
        parser.error("on needs --name and --key")
    power_on(args.host_dir, args.name, args.netns, args.bridge, args.address, args.key)
    return 0


def actions(host_dir: Path, name: str, switch: str, bridge: str, address: str, key: Path,
            python: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """argv lists (on, off, status) for a BMC of host `name` (vmsite.bmc.PowerActions)."""
    base = (python, "-m", "vmsite.power")
    where = ("--name", name, "--netns", net.host_namespace(switch, name), "--bridge", bridge,
             "--address", address, "--key", str(key))
    return ((*base, "on", str(host_dir), *where), (*base, "off", str(host_dir), *where),
            (*base, "status", str(host_dir)))


if __name__ == "__main__":
    raise SystemExit(main())
