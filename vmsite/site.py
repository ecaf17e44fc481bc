"""The vm stack's lifecycle: `up` (namespace, hosts, working copy, `pulumi up`, healthy site),
`down` (destroy, daemons stopped by PID, namespace and run directory removed, also after a
crash from what `state.json` recorded) and the checks the tests and `make vm` share.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from components.stack_file import atomic_write_text, load_topology, write_topology
from components.topology import Network, Role, Topology
from lab.netns import ip, kill_namespace_processes, namespaces, wait_exited
from vmsite import bmc, hypervisor, net, power, sshd
from vmsite.lock import SiteLock, live_holder
from vmsite.project import TEMPLATE, Pulumi, engine_missing, images_dir, make_working_copy
from vmsite.state import REPO, STACK, Recorded, RunDir, default_run_dir

CURL_TIMEOUT_S = 5
BMC_OFFSET = 100  # a host's BMC listens on its management address + 100 (kvm1 .2 -> .102)
WATCHDOG_SEAT = "watchdog"  # the watchdog's own namespace: mac-vm-watchdog (see watchdog_seat)
WATCHDOG_OFFSET = 250  # ... holding the network's address .250


class SiteError(RuntimeError):
    """A step of `up` failed; the message says which and why."""


def missing() -> str | None:
    """Why the vm stack cannot run on this machine, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespace, libvirtd, qemu)"
    why = hypervisor.missing() or sshd.missing() or engine_missing()
    if why:
        return why
    for tool in ("curl", "ip", "nc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed"
    images = images_dir()
    absent = [f"{images}/{t.value}.{ext}" for t in Role for ext in ("qcow2", "vmlinuz", "initrd")
              if not (images / f"{t.value}.{ext}").is_file()]
    if absent:
        return f"no golden images ({', '.join(absent[:2])}, ...): run `make images` as root"
    return None


@dataclass
class Site:
    """The vm stack of this machine, run from `run_dir` (default `.vm/`)."""

    run: RunDir = field(default_factory=lambda: RunDir(default_run_dir()))
    netns: str = net.NAMESPACE
    say: Callable[[str], None] = print
    hosts: dict[str, hypervisor.Host] = field(default_factory=dict)
    sshds: dict[str, sshd.Sshd] = field(default_factory=dict)
    lock: SiteLock = field(default_factory=SiteLock)
    timings: dict[str, float] = field(default_factory=dict)
    # Who else reads pulumi's output lines (bench/vm.py: each resource's duration).
    line_sinks: list[Callable[[str], None]] = field(default_factory=list)
    network: Network | None = None
    host_namespaces: list[str] = field(default_factory=list)
    _record_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pulumi(self) -> Pulumi:
        return Pulumi(self.run, self.netns)

    @property
    def project(self) -> Path:
        return self.run.project

    def topology(self) -> Topology:
        """What the working copy's stack file says now."""
        return load_topology(self.run.stack_file)

    # ---- up -------------------------------------------------------------------------------

    def up(self, template: Path = TEMPLATE) -> Topology:
        """Everything from nothing to a deployed stack (`pulumi up` done). Holds the lock until
        `down`. A run directory left by a crash is cleaned up first."""
        why = missing()
        if why:
            raise SiteError(f"cannot run the vm stack: {why}")
        self.lock.acquire()
        if self.run.load() is not None or self.netns in namespaces():
            self.say("cleaning up what an earlier run left")
            self.cleanup()
        started = time.monotonic()
        self.run.root.mkdir(parents=True, exist_ok=True)
        self.run.save(Recorded(self.netns))
        self.run.key.parent.mkdir(parents=True, exist_ok=True)
        sshd.keygen(self.run.key)
        atomic_write_text(self.run.passphrase_file, secrets.token_hex(24) + "\n", mode=0o600)
        topology = make_working_copy(self.run, template)
        self.network = topology.network
        net.create_switch(self.netns, topology.network)
        # At once: a libvirtd takes seconds to answer, four in a row were ~30 s of the first up.
        with ThreadPoolExecutor(len(topology.hosts)) as pool:
            for done in [pool.submit(self.start_host, name, spec.address)
                         for name, spec in topology.hosts.items()]:
                done.result()
        topology = self.start_bmcs(topology)
        self.watchdog_seat()
        self.timings["hosts_s"] = round(time.monotonic() - started, 1)
        pulumi = self.pulumi
        pulumi.prepare_home()
        pulumi.init_stack(Path(f"{self.run.key}.pub").read_text(), self.run.key.read_text())
        self.deploy("first up")
        return self.topology()

    def start_host(self, name: str, address: str) -> None:
        """Host `name`: its namespace on the switch, its libvirtd + virtlogd and an sshd on its
        address in there."""
        assert self.network is not None
        netns = net.create_host(self.netns, name, self.network, address)
        with self._record_lock:
            if netns not in self.host_namespaces:
                self.host_namespaces.append(netns)
            host = self.hosts.setdefault(name, hypervisor.Host(name, self.run.host_dir(name),
                                                               netns=netns))
            self._record()
        host.start()
        server = sshd.start(host.dir / "sshd", address=address, port=22, netns=netns,
                            client_key=self.run.key)
        with self._record_lock:
            self.sshds[name] = server
            self._record()

    def bmc_address(self, host: str) -> str:
        return str(ipaddress.ip_address(self.topology().hosts[host].address) + BMC_OFFSET)

    def start_bmcs(self, topology: Topology) -> Topology:
        """A simulated BMC per host (ipmi_sim in the switch namespace, on the host's address +
        BMC_OFFSET) whose power off/on is `vmsite.power`; the working copy's `fence` lines drive
        them with fence_ipmilan (the password only in the watchdog's environment)."""
        assert self.network is not None
        specs = []
        for name, host in topology.hosts.items():
            address = str(ipaddress.ip_address(host.address) + BMC_OFFSET)
            on, off, status = power.actions(self.run.host_dir(name), name, self.netns,
                                            self.network.bridge,
                                            f"{host.address}/{self.network.prefix_len}",
                                            self.run.key, sys.executable)
            specs.append(bmc.BmcSpec(name, address, bmc.PowerActions(on, off, status)))
        bmc.start(self.run.root, self.netns, self.network.bridge, specs)
        hosts = {name: replace(h, fence=bmc.fence_line(str(ipaddress.ip_address(h.address) + BMC_OFFSET),
                                                       power_wait_s=0))
                 for name, h in topology.hosts.items()}
        topology = topology.with_(hosts=hosts)
        write_topology(self.run.stack_file, topology)
        return topology

    @property
    def watchdog_netns(self) -> str:
        return net.host_namespace(self.netns, WATCHDOG_SEAT)

    def watchdog_seat(self) -> str:
        """The watchdog's namespace, on the switch like a host (veth `mvh-watchdog`): the drills
        cut that link to isolate it. Its `pulumi up` and SSH steps go the same way."""
        assert self.network is not None
        address = str(ipaddress.ip_network(self.network.cidr, strict=False).network_address
                      + WATCHDOG_OFFSET)
        netns = net.create_host(self.netns, WATCHDOG_SEAT, self.network, address)
        with self._record_lock:
            if netns not in self.host_namespaces:
                self.host_namespaces.append(netns)
            self._record()
        return netns

    def cut_watchdog(self, cut: bool) -> None:
        """Unplug (or plug back) the watchdog's link to the switch."""
        ip("-n", self.netns, "link", "set", net.switch_port(WATCHDOG_SEAT), "down" if cut else "up")

    def power(self, host: str, on: bool) -> None:
        """Switch `host` on or off directly (what its BMC's chassis does; a power cut)."""
        assert self.network is not None or self.run.stack_file.exists()
        network = self.network or self.topology().network
        address = f"{self.topology().hosts[host].address}/{network.prefix_len}"
        netns = net.host_namespace(self.netns, host)
        if on:
            power.power_on(self.run.host_dir(host), host, netns, network.bridge, address, self.run.key)
        else:
            power.power_off(self.run.host_dir(host), netns, network.bridge, address)

    def record(self) -> None:
        """state.json: the namespaces and every PID started so far (hosts start in threads)."""
        with self._record_lock:
            self._record()

    def _record(self) -> None:
        pids: dict[str, int] = {}
        for name, host in self.hosts.items():
            for i, pid in enumerate(host.pids):
                pids[f"{name}/{'libvirtd' if i == 0 else 'virtlogd'}"] = pid
        for name, server in self.sshds.items():
            if server.proc.poll() is None:
                pids[f"{name}/sshd"] = server.proc.pid
        self.run.save(Recorded(self.netns, pids, list(self.host_namespaces)))

    def deploy(self, what: str, on_line: Callable[[str], None] | None = None) -> float:
        """`pulumi up` of the working copy; its wall time."""
        started = time.monotonic()
        show = on_line or self._progress

        def each(line: str) -> None:
            show(line)
            for sink in self.line_sinks:
                sink(line)

        self.pulumi("up", "--stack", STACK, "--yes", "--skip-preview", "--message", what,
                    on_line=each)
        took = round(time.monotonic() - started, 1)
        self.say(f"pulumi up ({what}): {took} s")
        return took

    def _progress(self, line: str) -> None:
        """Pulumi's lines worth a glance: each VM and post-boot step done, errors, the summary."""
        text = " ".join(line.split())
        done = any(f"{kind} " in text for kind in ("Domain", "Command")) and \
            any(f"{verb} (" in text for verb in ("created", "deleted", "replaced", "updated"))
        if done or "error" in text.lower() or text.startswith(("Resources:", "Duration:")):
            self.say(f"  {text[:160]}")

    def move(self, node: str, to_host: str) -> Topology:
        """Node `node` placed on `to_host` in the working copy's stack file (not deployed)."""
        topology = self.topology().move_nodes([node], to_host)
        write_topology(self.run.stack_file, topology)
        return topology

    # ---- inside the namespace --------------------------------------------------------------

    def exec(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(net.argv(self.netns, argv), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def http(self, url: str, timeout: float = CURL_TIMEOUT_S) -> tuple[int, str]:
        """GET `url` from inside the namespace: (status, body); status 0 when nothing answered."""
        result = self.exec(["curl", "-s", "-m", str(timeout), "-o", "-", "-w", "\n%{http_code}", url],
                           timeout=timeout + 10)
        body, _, code = result.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def ssh(self, ip: str, command: str, timeout: float = 60) -> tuple[int, str]:
        """`command` on the VM at `ip` as root with the run's key: (exit code, output)."""
        # One login costs ~10 s in a TCG guest: later calls within 15 s reuse the connection.
        mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.run.key.parent}/mux-%C",
               "-o", "ControlPersist=15", "-o", "ServerAliveInterval=3", "-o", "ServerAliveCountMax=2"]
        result = self.exec(["ssh", "-i", str(self.run.key), "-o", "BatchMode=yes",
                            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                            "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", *mux, f"root@{ip}",
                            command], timeout=timeout)
        return result.returncode, (result.stdout + result.stderr).strip()

    def watchdog(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`mac-watchdog ARGS --stack vm` in the working copy, inside the namespace."""
        exe = str(REPO / ".venv" / "bin" / "mac-watchdog")
        argv = [exe, *args, "--stack", STACK, "--project-dir", str(self.project),
                "--state-dir", str(self.run.watchdog_state)]
        return subprocess.run(net.argv(self.netns, argv), capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.project,
                              env=self.watchdog_env())

    def watchdog_env(self) -> dict[str, str]:
        """The watchdog's environment: pulumi's, and the BMCs' password (for its fences only)."""
        env = {**self.pulumi.env, "COLUMNS": "120"}
        if bmc.load(self.run.root) is not None:
            env.update(bmc.environment(self.run.root))
        return env

    def status(self) -> tuple[bool, dict[str, object]]:
        """The watchdog's view (`status --json`): (all healthy, the report)."""
        result = self.watchdog("status", "--json")
        try:
            report = json.loads(result.stdout)
        except ValueError:
            return False, {"error": (result.stdout + result.stderr)[-2000:]}
        return result.returncode == 0, report

    def site_healthy(self, topology: Topology | None = None) -> list[str]:
        """What is not healthy yet (empty: healthy): the watchdog sees every host and node
        healthy and the LB serves the app's health page from both web nodes."""
        topology = topology or self.topology()
        problems: list[str] = []
        ok, report = self.status()
        if not ok:
            problems.append("watchdog: " + _unhealthy(report))
        lb = f"http://{topology.front_ip}"
        code, body = self.http(f"{lb}/health.php")
        if code != 200:
            problems.append(f"{lb}/health.php: {code} {body[:200]}")
        code, csv = self.http(f"http://{topology.arbitrator.ip}:8404/stats;csv")
        up = {line.split(",")[1] for line in csv.splitlines()
              if line.count(",") > 17 and line.split(",")[17].startswith("UP")}
        for web in topology.nodes_of(Role.WEB):
            if web.name not in up:
                problems.append(f"haproxy: {web.name} not UP")
        return problems

    def wait_healthy(self, timeout_s: float = 600, every_s: float = 2.0) -> float:
        """Seconds until `site_healthy` holds; SiteError naming what is not after `timeout_s`."""
        started = time.monotonic()
        problems: list[str] = ["not checked"]
        while time.monotonic() - started < timeout_s:
            problems = self.site_healthy()
            if not problems:
                return round(time.monotonic() - started, 1)
            time.sleep(every_s)
        raise SiteError(f"site not healthy after {timeout_s:.0f} s: {'; '.join(problems)}")

    # ---- down -----------------------------------------------------------------------------

    def down(self, destroy: bool = True) -> None:
        """`pulumi destroy` (when the hosts still answer), then `cleanup`."""
        if destroy and self.run.stack_file.exists() and self.netns in namespaces():
            # What still runs in the switch namespace is ours and tearing down: an interrupted
            # `pulumi up` (or one orphaned by a crash) and ssh connections. Its state lock too.
            wait_exited(kill_namespace_processes(self.netns))
            for lock in (self.run.backend / ".pulumi" / "locks").rglob("*.json"):
                lock.unlink(missing_ok=True)
            try:
                self.pulumi("destroy", "--stack", STACK, "--yes", "--skip-preview", timeout=600,
                            on_line=self._progress)
            except Exception as err:
                self.say(f"pulumi destroy failed; stopping the hosts anyway: {str(err)[-500:]}")
        self.cleanup()
        self.lock.release()

    def cleanup(self) -> None:
        """Stop every recorded daemon and guest by PID, remove the namespace and the run
        directory. Works from `state.json` alone (after a crash)."""
        for server in self.sshds.values():
            server.stop()
        for host in self.hosts.values():
            host.stop()
        with contextlib.suppress(bmc.BmcError):
            bmc.stop(self.run.root)
        recorded = self.run.load()
        pids = list(recorded.pids.values()) if recorded else []
        for host_dir in (self.run.root / "hosts").glob("*"):
            for pid_file in [*(host_dir / "run" / "qemu").glob("*.pid"),
                             host_dir / "libvirtd.pid", host_dir / "virtlogd.pid",
                             host_dir / "sshd" / "sshd.pid"]:
                with contextlib.suppress(OSError, ValueError):
                    pids.append(int(pid_file.read_text().strip()))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_exited(pids)
        for netns in {*(recorded.host_namespaces if recorded else []), *self.host_namespaces,
                      *(recorded.netns if recorded else self.netns,), self.netns}:
            if netns in namespaces():
                net.remove(netns)
        self.host_namespaces.clear()
        self.hosts.clear()
        self.sshds.clear()
        # Everything but the logs (pulumi's output, to read after a failed run).
        if self.run.root.is_dir():
            for entry in self.run.root.iterdir():
                if entry != self.run.logs:
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)


def _unhealthy(report: dict[str, object]) -> str:
    """The names the watchdog's report lists as not healthy (or its error)."""
    if "error" in report:
        return str(report["error"])[:300]
    targets = report.get("targets")
    bad = [f"{t.get('kind')} {t.get('name')} {t.get('error') or 'down'}"
           for t in (targets if isinstance(targets, list) else [])
           if isinstance(t, dict) and t.get("state") != "up"]
    return ", ".join(bad) or json.dumps(report)[:300]


def stop_holder(timeout_s: float = 600) -> bool:
    """SIGTERM the live process that holds the vm stack (it tears down); True if there was one."""
    holder = live_holder()
    if holder is None or holder.pid <= 0:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while live_holder() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    return True
