"""Boot a golden image under qemu (TCG) with the cloud-config MAC renders, and check its role (root).

Everything happens in a network namespace made here: a bridge holding the stack's gateway address,
one tap per VM, qemu itself and every probe (`vmimage.probe`, ssh) run inside it, so no packet to
the VMs' private addresses leaves from the machine's own namespace. Each boot gets a fresh qcow2
overlay and a NoCloud seed (user-data from components.roles, meta-data with a new instance-id,
network-config from components.vm) and writes the serial console to `console.log`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from components import vm
from components.roles import Secrets, mysql, user_data
from components.stack_file import load_topology, stack_path
from components.topology import HEALTH_ENDPOINTS, Network, Node, Role, Topology
from vmimage.build import DEFAULT_OUT, outputs

REPO = Path(__file__).resolve().parents[1]
KERNEL_CMDLINE = "root=LABEL=root ro console=ttyS0,115200 net.ifnames=0"
MEMORY_MIB = 768
# One node per tier of the stack whose cloud-config the VMs get (tests/vm, bench/images.py).
STACK = "ci"
NODES = ("db1", "web1", "lb1")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR")


def image_files(tier: str, images_dir: Path = DEFAULT_OUT) -> tuple[Path, Path, Path]:
    qcow2, kernel, initrd = outputs(images_dir, tier)
    return qcow2, kernel, initrd


def missing_images(tiers: Sequence[str], images_dir: Path = DEFAULT_OUT) -> list[Path]:
    return [f for tier in tiers for f in image_files(tier, images_dir) if not f.is_file()]


def run(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)


def must(argv: Sequence[str]) -> None:
    result = run(argv)
    if result.returncode:
        raise RuntimeError(f"{shlex.join(argv)}: {result.stderr.strip() or result.returncode}")


class Namespace:
    """A network namespace with a bridge that holds `network`'s gateway address."""

    def __init__(self, network: Network, name: str | None = None) -> None:
        self.network = network
        self.name = name or f"mac-vm-{os.getpid()}"
        self.bridge = "br0"

    def __enter__(self) -> Namespace:
        must(["ip", "netns", "add", self.name])
        try:
            ns = ["ip", "-n", self.name]
            must([*ns, "link", "set", "lo", "up"])
            must([*ns, "link", "add", self.bridge, "type", "bridge"])
            must([*ns, "addr", "add", f"{self.network.gateway}/{self.network.prefix_len}",
                  "dev", self.bridge])
            must([*ns, "link", "set", self.bridge, "up"])
        except Exception:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        run(["ip", "netns", "del", self.name])

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), timeout)

    def add_tap(self, name: str) -> None:
        must(["ip", "-n", self.name, "tuntap", "add", "dev", name, "mode", "tap"])
        must(["ip", "-n", self.name, "link", "set", name, "master", self.bridge, "up"])

    def probe(self, *args: str) -> tuple[bool, str]:
        """`vmimage.probe` inside the namespace: (answered, what it printed)."""
        result = subprocess.run(self.argv([sys.executable, "-m", "vmimage.probe", *args]),
                                capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
        return result.returncode == 0, result.stdout.strip()


def write_seed(directory: Path, node: Node, topology: Topology, secrets: Secrets) -> Path:
    """The NoCloud seed ISO of `node`: MAC's own renderings, a fresh instance-id per boot."""
    meta = json.loads(vm.meta_data(node, topology.cluster_name))
    meta["instance-id"] = f"{meta['instance-id']}-{uuid.uuid4().hex[:8]}"
    (directory / "user-data").write_text(user_data(node, topology, secrets))
    (directory / "meta-data").write_text(json.dumps(meta, indent=2) + "\n")
    (directory / "network-config").write_text(vm.network_config(node, topology.network))
    seed = directory / "seed.iso"
    must(["cloud-localds", "--network-config", str(directory / "network-config"), str(seed),
          str(directory / "user-data"), str(directory / "meta-data")])
    return seed


@dataclass
class Boot:
    """One VM started from its tier's image; `since(t)`: seconds from qemu's start."""

    node: Node
    directory: Path
    process: subprocess.Popen[bytes]
    started: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    def mark(self, what: str) -> float:
        self.timings[what] = round(time.monotonic() - self.started, 1)
        return self.timings[what]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console log)"
        return "\n".join(text.splitlines()[-lines:])


def start(ns: Namespace, node: Node, topology: Topology, secrets: Secrets, directory: Path,
          tap: str, images_dir: Path = DEFAULT_OUT, memory_mib: int = MEMORY_MIB) -> Boot:
    """Boot `node` from its role's image: overlay, seed, tap, qemu (TCG) inside `ns`."""
    directory.mkdir(parents=True, exist_ok=True)
    qcow2, kernel, initrd = image_files(node.role.value, images_dir)
    overlay = directory / "disk.qcow2"
    must(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(qcow2), str(overlay)])
    seed = write_seed(directory, node, topology, secrets)
    ns.add_tap(tap)
    argv = ns.argv([
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "1",
        "-m", str(memory_mib), "-display", "none", "-no-reboot", "-nodefaults",
        "-serial", f"file:{directory / 'console.log'}",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", KERNEL_CMDLINE,
        "-drive", f"file={overlay},if=virtio,format=qcow2",
        "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=n0,mac={vm.mac_address(node.name)}",
    ])
    log = (directory / "qemu.log").open("wb")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return Boot(node, directory, process, time.monotonic())


def wait_for(boot: Boot, what: str, check: Callable[[], bool], timeout_s: float,
             every_s: float = 1.0) -> bool:
    """Poll `check` until it holds (recorded in boot.timings[what]) or qemu exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            boot.mark(what)
            return True
        if boot.process.poll() is not None:
            return False
        time.sleep(every_s)
    return False


def ssh(ns: Namespace, key: Path, target: str, command: str, timeout: float = 120) -> tuple[int, str]:
    """`command` on `target` (user@ip) over SSH from inside the namespace: (exit code, output)."""
    result = ns.run(["ssh", "-i", str(key), *SSH_OPTIONS, target, command], timeout)
    return result.returncode, (result.stdout + result.stderr).strip()


@dataclass
class RoleCheck:
    """What one tier's boot showed; `problems` empty when everything answered as it should."""

    node: str
    role: str
    timings: dict[str, float]
    seen: dict[str, str]
    problems: list[str]


# systemd state each role's cloud-config must leave behind (unit -> is-enabled/is-active answer).
EXPECTED_UNITS: dict[Role, dict[str, str]] = {
    Role.MYSQL: {"mariadb.service": "disabled", "mac-galera-start.service": "enabled",
                 "mac-clustercheck.service": "active"},
    Role.WEB: {"apache2.service": "disabled", "mac-apache.service": "active"},
    Role.LB: {"garb.service": "disabled", "haproxy.service": "active", "mac-garbd.service": "disabled"},
}


def check_role(ns: Namespace, boot: Boot, key: Path, ssh_user: str = "root",
               timeout_s: float = 420) -> RoleCheck:
    """Wait for the VM to answer (IP, sshd, cloud-init, the role's service) and check its role."""
    node, ip = boot.node, boot.node.ip
    target = f"{ssh_user}@{ip}"
    sudo = "" if ssh_user == "root" else "sudo -n "
    seen: dict[str, str] = {}
    problems: list[str] = []
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    def check(what: str, probe: Sequence[str], accept: Callable[[str], bool]) -> bool:
        def once() -> bool:
            ok, out = ns.probe(*probe)
            seen[what] = out
            return ok and accept(out)
        if wait_for(boot, what, once, left()):
            return True
        problems.append(f"{what}: no answer as expected (last: {seen.get(what)!r})")
        return False

    if not check("ip", ["icmp", ip], lambda out: out == "reply"):
        return RoleCheck(node.name, node.role.value, boot.timings, seen, problems)
    check("ssh", ["banner", ip, "22"], lambda out: out.startswith("SSH-2.0-"))
    endpoint = HEALTH_ENDPOINTS[node.role]
    if node.role is Role.WEB:
        # No DB behind it: PHP runs the health page and answers 503 (the correct answer).
        check("service", ["http", f"http://{ip}:{endpoint.port}{endpoint.path}", '"status"'],
              lambda out: out.split()[:2] in (["503", "found"], ["200", "found"]))
    elif node.role is Role.LB:
        check("service", ["http", f"http://{ip}:{endpoint.port}/stats;csv", "web1"],
              lambda out: out.split()[:2] == ["200", "found"])
    else:
        # clustercheck answers (503: mariadb is not started before mac-galera-start runs).
        check("service", ["http", f"http://{ip}:{endpoint.port}{endpoint.path}"],
              lambda out: out.split()[:1] == ["503"])
    code, out = ssh(ns, key, target, "cloud-init status --wait --long", left())
    seen["cloud-init"] = out
    boot.mark("cloud_init_done")
    if "status: done" not in out:
        problems.append(f"cloud-init did not finish cleanly (exit {code}):\n{out}")
    # Where the boot time went, and anything cloud-init complained about (for the report).
    code, out = ssh(ns, key, target, "systemd-analyze time; systemd-analyze blame | head -n 8; "
                    "grep -E ' (WARNING|ERROR)' /var/log/cloud-init.log | tail -n 20", 120)
    seen["boot-profile"] = out
    units = EXPECTED_UNITS[node.role]
    code, out = ssh(ns, key, target, " ; ".join(
        f"echo {u}=$(systemctl {'is-active' if want == 'active' else 'is-enabled'} {u})"
        for u, want in units.items()), 60)
    seen["units"] = out
    for unit, want in units.items():
        if f"{unit}={want}" not in out.split():
            problems.append(f"{unit}: expected {want}, got {out!r}")
    if node.role is Role.MYSQL:
        # The post-boot step of the stack's first deploy: found the cluster on this node.
        started = time.monotonic()
        code, out = ssh(ns, key, target, f"{sudo}{mysql.GALERA_START} {mysql.FIRST_DEPLOY_FLAG}", left())
        seen["galera-start"] = out[-2000:]
        if code:
            problems.append(f"mac-galera-start --first-deploy failed (exit {code}):\n{out[-2000:]}")
        elif check("synced", ["http", f"http://{ip}:{endpoint.port}{endpoint.path}"],
                   lambda out: out.split()[:1] == ["200"]):
            boot.timings["galera_start_s"] = round(time.monotonic() - started, 1)
    return RoleCheck(node.name, node.role.value, boot.timings, seen, problems)


def join_arbitrator(ns: Namespace, key: Path, ssh_user: str, db: tuple[RoleCheck, Boot],
                    lb: tuple[RoleCheck, Boot], timeout_s: float = 120) -> None:
    """The post-boot step `garbd-start`: the LB's garbd joins the DB node's one-node cluster.

    Proves the LB image's mac-garbd unit and the EVS settings it shares with the data node:
    db's wsrep_cluster_size must reach 2. Recorded in lb's check (timings or problems).
    """
    (db_check, db_boot), (lb_check, lb_boot) = db, lb
    if "synced" not in db_check.timings:
        lb_check.problems.append("garbd not tried: the DB node never became Synced")
        return
    sudo = "" if ssh_user == "root" else "sudo -n "
    started = time.monotonic()
    code, out = ssh(ns, key, f"{ssh_user}@{lb_boot.node.ip}",
                    f"{sudo}systemctl enable --now mac-garbd.service", timeout_s)
    if code:
        lb_check.problems.append(f"mac-garbd did not start (exit {code}): {out}")
        return

    def size() -> bool:
        _, out = ssh(ns, key, f"{ssh_user}@{db_boot.node.ip}",
                     f"{sudo}mariadb -N -B -e \"SHOW GLOBAL STATUS LIKE 'wsrep_cluster_size'\"", 30)
        lb_check.seen["wsrep_cluster_size"] = out
        return out.split()[-1:] == ["2"]

    if wait_for(lb_boot, "garbd_joined", size, timeout_s, every_s=2.0):
        lb_check.timings["garbd_join_s"] = round(time.monotonic() - started, 1)
    else:
        lb_check.problems.append(f"garbd did not join: {lb_check.seen.get('wsrep_cluster_size')!r}")


def boot_tiers(work: Path, images_dir: Path = DEFAULT_OUT, stack: str = STACK,
               nodes: Sequence[str] = NODES) -> tuple[list[RoleCheck], list[Boot]]:
    """Boot `nodes` of `stack` at once, each from its tier's image, check them, stop them.

    The stack's ssh key is replaced by a new one made here (the checks log in with it); the
    secrets are test values. Returns the checks and the (stopped) boots, for their console logs.
    """
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    topology = load_topology(stack_path(REPO, stack))
    topology = dataclasses.replace(topology, ssh_public_key=key.with_suffix(".pub").read_text().strip())
    secrets = Secrets(db_root_password="vm-test-root", db_app_password="vm-test-app")
    with Namespace(topology.network) as ns:
        boots: list[Boot] = []
        try:
            for i, name in enumerate(nodes):
                boots.append(start(ns, topology.nodes[name], topology, secrets, work / name, f"tap{i}",
                                   images_dir))
            with ThreadPoolExecutor(len(boots)) as pool:
                checks = list(pool.map(lambda b: check_role(ns, b, key, topology.ssh_user), boots))
            by_role = {Role(c.role): (c, b) for c, b in zip(checks, boots, strict=True)}
            if Role.MYSQL in by_role and Role.LB in by_role:
                join_arbitrator(ns, key, topology.ssh_user, by_role[Role.MYSQL], by_role[Role.LB])
        finally:
            for b in boots:
                b.stop()
    return checks, boots
