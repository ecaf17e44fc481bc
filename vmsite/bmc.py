"""Simulated BMCs for the local hosts: one OpenIPMI `ipmi_sim` per host, inside a network namespace.

Each BMC answers IPMI over LAN (RMCP+ and IPMI 1.5) on its own address, port 623, with one admin
user whose password is generated once per run directory and kept in files of mode 0600 (the BMC's
lan.conf, `bmc/password`), never on a command line. Its chassis power off/on/status run the host's
power actions, argv lists injected by the caller (vmsite/chassis.py runs them for ipmi_sim).
The watchdog fences such a host the way a real site does: ClusterLabs' fence_ipmilan with
`--ipmitool-path mac-ipmitool` and IPMI_PASSWORD in its environment (`fence_line`, README
"Fencing with IPMI").

Everything started is recorded in `bmc/state.json` (written atomically) before it is waited for;
`stop` ends it by PID (checked against its start time) and removes the addresses it added, also
after a crash of the process that started it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import signal
import string
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from components.stack_file import atomic_write_text

IPMI_PORT = 623
USERNAME = "mac-fence"
PASSWORD_LENGTH = 16  # IPMI 1.5 allows 16 characters (RMCP+ 20)
CIPHER_SUITE = 3  # RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128: authenticated and encrypted
PACKAGES = "openipmi fence-agents ipmitool"
CHASSIS = Path(__file__).with_name("chassis.py")
STATE_FILE = "state.json"
START_TIMEOUT_S = 10.0
SAFE_PATH = re.compile(r"[A-Za-z0-9._+/-]+")  # what lan.conf's quoted strings can carry as is


class BmcError(RuntimeError):
    """A BMC cannot be started or stopped; the message says which and why."""


@dataclass(frozen=True)
class PowerActions:
    """How to power a host on and off and ask its state: argv lists run without a shell, inside
    the BMC's namespace, from the BMC's directory. `status` prints `on` or `off` (vmsite/chassis.py).
    Each should finish within a second or two: ipmi_sim answers nobody while one runs, and
    ipmitool retries after 2 s. `on` may leave daemons running: their output goes to chassis.log."""

    on: tuple[str, ...]
    off: tuple[str, ...]
    status: tuple[str, ...]


@dataclass(frozen=True)
class BmcSpec:
    host: str  # the host's name in the stack file (kvm1)
    address: str  # where its BMC listens, an IPv4 address on the management network
    actions: PowerActions
    port: int = IPMI_PORT


@dataclass(frozen=True)
class RunningBmc:
    host: str
    address: str
    port: int
    pid: int
    ticks: int | None  # /proc/PID/stat field 22: tells this ipmi_sim from a later process


@dataclass(frozen=True)
class Site:
    """The BMCs of one run directory, as recorded in its state file."""

    netns: str
    link: str
    added_addresses: tuple[str, ...]
    bmcs: tuple[RunningBmc, ...]


def missing() -> str | None:
    """Why simulated BMCs and fence_ipmilan cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool, where in (("ipmi_sim", "/usr/bin"), ("ipmitool", "/usr/bin"), ("fence_ipmilan", "/usr/sbin")):
        if not Path(where, tool).exists():
            return f"{tool} not installed: apt-get install --no-install-recommends {PACKAGES}"
    return None


def bmc_dir(run_dir: Path) -> Path:
    return run_dir / "bmc"


def password(run_dir: Path) -> str:
    """The BMCs' password of this run directory, created (mode 0600) on first use."""
    path = bmc_dir(run_dir) / "password"
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    bmc_dir(run_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    alphabet = string.ascii_letters + string.digits
    value = "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH))
    _write_private(path, value + "\n")
    return value


def environment(run_dir: Path) -> dict[str, str]:
    """What the fencing process needs in its environment (and nowhere else)."""
    return {"IPMI_PASSWORD": password(run_dir)}


def fence_line(address: str, port: int = IPMI_PORT, action: str = "off", username: str = USERNAME,
               ipmitool_path: Path | str | None = None, agent: str = "fence_ipmilan",
               power_wait_s: int | None = None) -> str:
    """The stack file's `fence` for a host whose BMC is at address:port. No password in it:
    `mac-ipmitool` hands ipmitool IPMI_PASSWORD from the watchdog's environment.
    `power_wait_s`: fence_ipmilan's pause after the power command before it polls the status
    (its default, 2 s, suits BMCs that report the old state for a moment; a simulated one does not)."""
    tool = ipmitool_path or Path(sys.prefix, "bin", "mac-ipmitool")
    argv = [agent, "--ip", address, "--ipport", str(port), "--username", username, "--lanplus",
            "--cipher", str(CIPHER_SUITE), "--ipmitool-path", str(tool)]
    if power_wait_s is not None:
        argv += ["--power-wait", str(power_wait_s)]
    return shlex.join([*argv, "--action", action])


def render_lan_conf(spec: BmcSpec, secret: str, chassis_command: str, username: str = USERNAME) -> str:
    """ipmi_sim's config (ipmi_lan(5)): one LAN channel on spec.address, MD5 for IPMI 1.5, one admin
    user. Holds the password: written 0600."""
    for label, value in (("password", secret), ("username", username), ("chassis command", chassis_command)):
        if '"' in value or "\n" in value or "\\" in value:
            raise BmcError(f"BMC {spec.host}: the {label} cannot contain quotes, backslashes or newlines")
    auths = "md5"
    return "\n".join([
        f'name "{spec.host}"',
        "set_working_mc 0x20",
        "  startlan 1",
        f"    addr {spec.address} {spec.port}",
        "    priv_limit admin",
        *(f"    allowed_auths_{level} {auths}" for level in ("callback", "user", "operator", "admin")),
        f"    guid {secrets.token_hex(16)}",  # a GUID is what enables RMCP+ (IPMI 2.0)
        "  endlan",
        f'  chassis_control "{chassis_command}"',
        f'  user 2 true "{username}" "{secret}" admin 10 {auths}',
        "",
    ])


EMU_COMMANDS = "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n"


def start(run_dir: Path, netns: str, link: str, specs: Sequence[BmcSpec]) -> Site:
    """One ipmi_sim per spec inside `netns`, listening on spec.address (added as a /32 to `link` in
    the namespace when no interface there has it). Returns once every BMC listens; on failure
    everything started is stopped again."""
    why = missing()
    if why:
        raise BmcError(f"cannot start BMCs: {why}")
    for spec in specs:
        _check_spec(spec)
    base = bmc_dir(run_dir)
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    if (base / STATE_FILE).exists():
        stop(run_dir)  # left by a crashed run: its BMCs would hold the addresses
    secret = password(run_dir)
    site = Site(netns, link, (), ())
    try:
        for spec in specs:
            if not _has_address(netns, spec.address):
                _ip("-n", netns, "addr", "add", f"{spec.address}/32", "dev", link)
                site = Site(netns, link, (*site.added_addresses, spec.address), site.bmcs)
                _save(run_dir, site)
            bmc = _start_one(base / spec.host, netns, spec, secret)
            site = Site(netns, link, site.added_addresses, (*site.bmcs, bmc))
            _save(run_dir, site)
        for bmc in site.bmcs:
            _wait_listening(bmc)
    except BaseException:
        stop(run_dir)
        raise
    return site


def load(run_dir: Path) -> Site | None:
    """The recorded BMCs of `run_dir`, or None."""
    try:
        data = json.loads((bmc_dir(run_dir) / STATE_FILE).read_text())
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise BmcError(f"{bmc_dir(run_dir) / STATE_FILE} is damaged ({err}); stop the ipmi_sim "
                       "processes by hand (pgrep -a ipmi_sim) and delete it") from None
    return Site(data["netns"], data["link"], tuple(data["added_addresses"]),
                tuple(RunningBmc(**b) for b in data["bmcs"]))


def stop(run_dir: Path, timeout_s: float = 10.0) -> list[int]:
    """End every recorded ipmi_sim (SIGTERM, then SIGKILL) and remove the addresses `start` added;
    the PIDs ended. Safe to repeat and after a crash; the password file stays with the run dir."""
    site = load(run_dir)
    if site is None:
        return []
    ended = []
    for bmc in site.bmcs:
        if bmc.ticks is not None and _start_ticks(bmc.pid) == bmc.ticks:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bmc.pid, signal.SIGTERM)  # its group: a chassis action in flight too
                ended.append(bmc.pid)
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in ended) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in ended:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(_alive(p) for p in ended) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in ended:
        _reap(pid)
    for address in site.added_addresses:
        _ip("-n", site.netns, "addr", "del", f"{address}/32", "dev", site.link, check=False)
    (bmc_dir(run_dir) / STATE_FILE).unlink(missing_ok=True)
    return ended


# -- internals ---------------------------------------------------------------------------------


def _check_spec(spec: BmcSpec) -> None:
    try:
        if ipaddress.ip_address(spec.address).version != 4:
            raise ValueError("not IPv4")
    except ValueError:
        raise BmcError(f"BMC {spec.host}: address {spec.address!r} is not an IPv4 address") from None
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,31}", spec.host):
        raise BmcError(f"BMC host name {spec.host!r}: use a-z 0-9 - (a stack file host name)")
    for name in ("on", "off", "status"):
        argv = getattr(spec.actions, name)
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise BmcError(f"BMC {spec.host}: power {name} must be a non-empty argv list")


def _start_one(directory: Path, netns: str, spec: BmcSpec, secret: str) -> RunningBmc:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "state").mkdir(mode=0o700, exist_ok=True)
    config = directory / "chassis.json"
    _write_private(config, json.dumps({**asdict(spec.actions), "log": str(directory / "chassis.log")},
                                      indent=1) + "\n")
    command = f"{sys.executable} -I {CHASSIS} {config}"
    for path in (sys.executable, str(CHASSIS), str(config)):
        if not SAFE_PATH.fullmatch(path):
            raise BmcError(f"BMC {spec.host}: path {path!r} has characters ipmi_sim's config cannot "
                           "carry; use a run directory whose path is only A-Z a-z 0-9 . _ + - /")
    lan_conf = directory / "lan.conf"
    _write_private(lan_conf, render_lan_conf(spec, secret, command))
    _write_private(directory / "sim.emu", EMU_COMMANDS)
    argv = ["ip", "netns", "exec", netns, "ipmi_sim", "-n", "-c", str(lan_conf),
            "-f", str(directory / "sim.emu"), "-s", str(directory / "state")]
    with open(directory / "ipmi_sim.log", "ab") as log:
        # `ip netns exec` execs: the PID is ipmi_sim's; its own group, so stop() also ends a
        # chassis action it runs. A minimal environment: nothing of ours leaks into the actions.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                cwd=directory, start_new_session=True,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    return RunningBmc(spec.host, spec.address, spec.port, proc.pid, _start_ticks(proc.pid))


def _wait_listening(bmc: RunningBmc) -> None:
    """Until ipmi_sim has bound its UDP socket: its namespace's /proc/PID/net/udp lists it."""
    want = f"{_hex_address(bmc.address)}:{bmc.port:04X}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not _alive(bmc.pid):
            raise BmcError(f"ipmi_sim for {bmc.host} exited at start; see its ipmi_sim.log")
        with contextlib.suppress(OSError):
            table = Path(f"/proc/{bmc.pid}/net/udp").read_text()
            if any(line.split()[1] == want for line in table.splitlines()[1:]):
                return
        time.sleep(0.02)
    raise BmcError(f"ipmi_sim for {bmc.host} did not listen on {bmc.address}:{bmc.port} "
                   f"within {START_TIMEOUT_S:g} s")


def _hex_address(address: str) -> str:
    """An IPv4 address as /proc/net/udp writes it (host byte order, little endian here)."""
    return ipaddress.IPv4Address(address).packed[::-1].hex().upper()


def _has_address(netns: str, address: str) -> bool:
    out = _ip("-n", netns, "-o", "addr", "show", check=False).stdout
    return any(f"inet {address}/" in line for line in out.splitlines())


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise BmcError(f"`ip {' '.join(args)}` exited {out.returncode}: {out.stderr.strip()}")
    return out


def _write_private(path: Path, text: str) -> None:
    """Write atomically, mode 0600 from the start (the file may hold the password)."""
    atomic_write_text(path, text, mode=0o600)


def _save(run_dir: Path, site: Site) -> None:
    data = {"netns": site.netns, "link": site.link, "added_addresses": list(site.added_addresses),
            "bmcs": [asdict(b) for b in site.bmcs]}
    _write_private(bmc_dir(run_dir) / STATE_FILE, json.dumps(data, indent=1) + "\n")


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int) -> bool:
    """Running (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _reap(pid: int) -> None:
    """Collect the exit status when this process is the parent (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
