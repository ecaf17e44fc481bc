"""IPMI fencing for real: the watchdog's fence runs ClusterLabs' fence_ipmilan against a simulated
BMC (OpenIPMI's ipmi_sim, vmsite/bmc.py) whose chassis power-off kills a host.

The host is a stand-in (tests/vm/standin_host.py: three `sleep` processes in a group of their own
and a management address on a bridge, in a namespace the test makes): a real host is a libvirtd
with its qemus (vmsite), which the BMC neither knows nor needs. Everything else is the real thing:
ipmi_sim on its own address in the namespace, fence_ipmilan, ipmitool over RMCP+ (cipher suite 3),
mac-ipmitool, and watchdog.fence.fence with the stack file's line. The password is only in the
test's environment (IPMI_PASSWORD) and the BMC's 0600 config.

Without root or the packages (openipmi fence-agents ipmitool) the tests skip, unless
MAC_VM_TESTS=required (.ci/run): then they fail.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.topology import Host
from lab.netns import delete_namespace, namespaces, wait_exited
from vmsite import bmc
from watchdog.errors import FenceError
from watchdog.fence import fence

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]

NETNS = "mac-bmc-test"
BRIDGE = "br-bmc"
HOST_ADDRESS = "192.168.160.11"  # the stand-in host's management address
BMC_ADDRESS = "192.168.160.201"
STANDIN = Path(__file__).with_name("standin_host.py")
MAC_IPMITOOL = Path(sys.prefix, "bin", "mac-ipmitool")


def _skip_or_fail() -> None:
    why = bmc.missing()
    if why is None and not MAC_IPMITOOL.exists():
        why = f"{MAC_IPMITOOL} missing: run `make venv`"
    if why:
        if os.environ.get("MAC_VM_TESTS") == "required":
            pytest.fail(f"BMC tests cannot run: {why}")
        pytest.skip(f"BMC tests: {why}")


@dataclass
class Standin:
    directory: Path

    def argv(self, action: str) -> tuple[str, ...]:
        if action == "status":
            return (sys.executable, str(STANDIN), "status", str(self.directory))
        return (sys.executable, str(STANDIN), action, str(self.directory), NETNS, BRIDGE, HOST_ADDRESS)

    def power(self, action: str) -> None:
        subprocess.run(self.argv(action), check=True)

    def pids(self) -> list[int]:
        pgid = int((self.directory / "pgid").read_text())
        return _group_members(pgid)

    def has_address(self) -> bool:
        out = subprocess.run(["ip", "-n", NETNS, "-o", "addr", "show", "dev", BRIDGE],
                             capture_output=True, text=True, check=True).stdout
        return f"inet {HOST_ADDRESS}/" in out


@dataclass
class Site:
    run_dir: Path
    host: Standin
    bmc: bmc.Site
    password: str

    def line(self, action: str) -> str:
        return bmc.fence_line(BMC_ADDRESS, action=action, ipmitool_path=MAC_IPMITOOL, power_wait_s=0)

    def agent(self, action: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
        """fence_ipmilan run as the watchdog would, from inside the namespace."""
        env = {**os.environ, "IPMI_PASSWORD": password or self.password}
        return subprocess.run(["ip", "netns", "exec", NETNS, *shlex.split(self.line(action))],
                              env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)


def _group_members(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _make_namespace() -> None:
    if NETNS in namespaces():
        wait_exited(delete_namespace(NETNS))
    for argv in (["ip", "netns", "add", NETNS], ["ip", "-n", NETNS, "link", "set", "lo", "up"],
                 ["ip", "-n", NETNS, "link", "add", BRIDGE, "type", "bridge"],
                 ["ip", "-n", NETNS, "link", "set", BRIDGE, "up"]):
        subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    _skip_or_fail()
    run_dir = tmp_path_factory.mktemp("bmc")
    _make_namespace()
    host = Standin(run_dir / "host")
    host.directory.mkdir()
    try:
        host.power("on")
        actions = bmc.PowerActions(on=host.argv("on"), off=host.argv("off"), status=host.argv("status"))
        started = bmc.start(run_dir, NETNS, BRIDGE, [bmc.BmcSpec("kvm1", BMC_ADDRESS, actions)])
        yield Site(run_dir, host, started, bmc.password(run_dir))
    finally:
        bmc.stop(run_dir)
        wait_exited(delete_namespace(NETNS))


@pytest.fixture
def powered_on(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """The stand-in host running, and the watchdog's environment holding the BMC password."""
    site.host.power("on")
    assert site.host.pids() and site.host.has_address()
    monkeypatch.setenv("IPMI_PASSWORD", site.password)
    return site


def _fence(site: Site, action: str = "off") -> None:
    """watchdog.fence.fence with the stack-style line, run inside the namespace like the vm stack's
    watchdog (the line is the stack file's; `ip netns exec` is where the watchdog runs)."""
    host = Host("kvm1", "qemu:///system", HOST_ADDRESS,
                "ip netns exec " + NETNS + " " + site.line(action))
    fence(host, timeout_s=60)


def test_fence_off_powers_the_host_off_status_says_off_and_on_starts_it(powered_on: Site) -> None:
    site = powered_on
    pids = site.host.pids()
    assert len(pids) == 3

    _fence(site, "off")
    assert wait_exited(pids, timeout_s=5) == [], "the host's processes outlived the fence"
    assert not site.host.has_address(), "the host's management address is still up"

    status = site.agent("status")
    assert status.returncode == 2, status  # fence agents: 0 on, 2 off, 1 error
    assert "Status: OFF" in status.stdout

    _fence(site, "on")
    assert len(site.host.pids()) == 3 and site.host.has_address()
    status = site.agent("status")
    assert status.returncode == 0 and "Status: ON" in status.stdout, status


def test_a_wrong_password_fails_the_fence_and_kills_nothing(powered_on: Site,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    site = powered_on
    pids = site.host.pids()
    chassis_log = bmc.bmc_dir(site.run_dir) / "kvm1" / "chassis.log"
    before = chassis_log.read_text() if chassis_log.exists() else ""
    monkeypatch.setenv("IPMI_PASSWORD", "not-the-password")
    with pytest.raises(FenceError, match="exited with 1"):
        _fence(site, "off")
    assert site.host.pids() == pids and site.host.has_address()
    after = chassis_log.read_text() if chassis_log.exists() else ""
    assert after == before, "the BMC ran a power action for a caller with a wrong password"


def test_without_the_password_in_the_environment_the_fence_fails_and_says_why(
        powered_on: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site = powered_on
    monkeypatch.delenv("IPMI_PASSWORD")
    with pytest.raises(FenceError, match="IPMI_PASSWORD, which is not set"):
        _fence(site, "off")
    assert len(site.host.pids()) == 3


def test_the_password_is_in_no_process_argv_during_a_fence(powered_on: Site) -> None:
    site = powered_on
    secret = site.password.encode()
    seen: set[bytes] = set()  # every command line seen, also both sides of an exec
    done = threading.Event()

    def scan() -> None:
        while not done.is_set():
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open(f"/proc/{name}/cmdline", "rb") as f:
                            seen.add(f.read())
                    except OSError:
                        pass

    def ipmitools() -> list[list[bytes]]:
        commands = [cmd.split(b"\0") for cmd in set(seen)]
        return [c for c in commands if c and c[0].endswith(b"ipmitool")]

    scanner = threading.Thread(target=scan, daemon=True)
    scanner.start()
    try:
        time.sleep(0.05)
        for _ in range(5):  # an ipmitool lives ~30 ms: fence again until the scan has caught some
            _fence(site, "off")
            _fence(site, "on")
            if ipmitools():
                break
    finally:
        done.set()
        scanner.join()
    leaks = [cmd.replace(b"\0", b" ") for cmd in seen if secret in cmd]
    assert leaks == [], f"password in argv: {leaks}"
    commands = [cmd.split(b"\0") for cmd in seen]
    caught = ipmitools()
    print(f"command lines seen: {len(seen)}, ipmitool: {len(caught)}")
    assert caught, "the scan saw no ipmitool: it proves nothing"
    assert all(b"-E" in c for c in caught), caught
    assert any(b"ipmi_sim" in c[0] for c in commands)
    assert secret not in site.line("off").encode()
    for name in ("lan.conf", "chassis.json"):
        assert (bmc.bmc_dir(site.run_dir) / "kvm1" / name).stat().st_mode & 0o077 == 0
    assert (bmc.bmc_dir(site.run_dir) / "password").stat().st_mode & 0o077 == 0


def test_stop_from_the_recorded_state_after_a_crash_leaves_nothing(site: Site, tmp_path: Path) -> None:
    """A process that started BMCs dies (SIGKILL); `stop` on its run directory ends its ipmi_sims
    and removes the addresses it added."""
    run_dir = tmp_path / "crashed"
    code = ("import signal; from pathlib import Path; from vmsite import bmc; "
            "actions = bmc.PowerActions(('true',), ('true',), ('echo', 'on')); "
            f"bmc.start(Path({str(run_dir)!r}), {NETNS!r}, {BRIDGE!r}, "
            "[bmc.BmcSpec('kvm2', '192.168.160.202', actions)]); "
            "print('up', flush=True); signal.pause()")
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               cwd=Path(__file__).parents[2])
    assert starter.stdout is not None
    assert starter.stdout.readline().strip() == "up"
    starter.kill()
    starter.wait()
    recorded = bmc.load(run_dir)
    assert recorded is not None and len(recorded.bmcs) == 1
    pid = recorded.bmcs[0].pid
    assert _group_members(pid), "ipmi_sim should outlive the process that started it"

    assert bmc.stop(run_dir) == [pid]
    assert wait_exited([pid], timeout_s=5) == []
    addresses = subprocess.run(["ip", "-n", NETNS, "-o", "addr"], capture_output=True, text=True,
                               check=True).stdout
    assert "192.168.160.202/" not in addresses and BMC_ADDRESS in addresses
    assert bmc.load(run_dir) is None and bmc.stop(run_dir) == []


def test_teardown_leaves_no_process_and_no_namespace(site: Site) -> None:
    pids = [b.pid for b in site.bmc.bmcs]
    host_pids = site.host.pids()
    bmc.stop(site.run_dir)
    wait_exited(delete_namespace(NETNS))
    assert wait_exited([*pids, *host_pids], timeout_s=5) == []
    assert NETNS not in namespaces()
    leftovers = subprocess.run(["pgrep", "-f", str(site.run_dir)], capture_output=True, text=True).stdout
    assert leftovers == ""
