"""Start each role's real daemons inside a node's namespace, with the configs the roles render.

Only paths differ from a VM (every node gets its own directory); the config text comes from
components/roles verbatim, and Galera starts through the same mac-galera-start script.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from components.roles import keepalived, lb, mysql, web
from components.roles.common import script_path
from components.topology import Node, Role, Topology
from lab.netns import LabError, run
from lab.state import LabState, Proc, start_ticks


@dataclass(frozen=True)
class NodeDirs:
    root: Path

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def run(self) -> Path:
        return self.root / "run"


def mysql_paths(dirs: NodeDirs) -> mysql.MysqlPaths:
    return mysql.MysqlPaths(datadir=str(dirs.root / "data"), socket=str(dirs.run / "mysqld.sock"),
                            pid_file=str(dirs.run / "mysqld.pid"), log_error=str(dirs.log / "error.log"),
                            tmpdir=str(dirs.root / "tmp"), user="mysql")


def apache_paths(dirs: NodeDirs) -> web.ApachePaths:
    return web.ApachePaths(server_root=str(dirs.root), docroot=str(dirs.root / "www"),
                           runtime_dir=str(dirs.run), pid_file=str(dirs.run / "httpd.pid"),
                           error_log=str(dirs.log / "error.log"),
                           access_log=str(dirs.log / "access.log"),
                           app_config=str(dirs.root / "app.json"))


def haproxy_paths(dirs: NodeDirs) -> lb.HaproxyPaths:
    return lb.HaproxyPaths(stats_socket=str(dirs.run / "admin.sock"), log_target="stdout",
                           user=None, group=None)


# Our children, kept so they can be waited for (and reaped once killed: no zombies).
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(state: LabState, ns: str, node: str, what: str, argv: list[str], dirs: NodeDirs,
          log_name: str, enter: bool = True) -> Proc:
    """Run `argv` inside `ns` in its own session (so its process group can be killed whole).
    `enter=False`: `argv` enters the namespace by itself (keepalived --namespace)."""
    with open(dirs.log / log_name, "ab") as out:
        # cwd = the node's directory: garbd keeps its view (gvwstate.dat) in its working directory.
        command = ["ip", "netns", "exec", ns, *argv] if enter else argv
        popen = subprocess.Popen(command, stdout=out, stderr=out,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 cwd=dirs.root)
    CHILDREN[popen.pid] = popen
    proc = Proc(popen.pid, popen.pid, start_ticks(popen.pid) or 0, node, what)
    state.add_proc(proc)
    return proc


def reap(pids: list[int] | None = None, timeout_s: float = 5.0) -> None:
    """Collect exited children; wait up to `timeout_s` for `pids` (just killed) to be gone.

    A killed daemon that stays a zombie keeps its PID alive, and Apache then refuses to start
    again ("httpd (pid N) already running" from its pid file).
    """
    for pid in pids or []:
        popen = CHILDREN.get(pid)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout_s)
    for pid, popen in list(CHILDREN.items()):
        if popen.poll() is not None:
            del CHILDREN[pid]


def _chown_mysql(*paths: Path) -> None:
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, "mysql", "mysql")


# ---- mysql ----------------------------------------------------------------------------------

def prepare_mysql(node: Node, topology: Topology, dirs: NodeDirs) -> Path:
    """Config + an initialised datadir (once); returns the config path."""
    paths = mysql_paths(dirs)
    dirs.root.mkdir(parents=True, exist_ok=True)
    _chown_mysql(dirs.log, dirs.run, Path(paths.tmpdir))
    cnf = dirs.root / "my.cnf"
    db_ips = [n.ip for n in topology.nodes_of(Role.MYSQL)]
    cnf.write_text(mysql.render_galera_cnf(node.name, node.ip, db_ips, topology.cluster_name, paths))
    datadir = Path(paths.datadir)
    if not (datadir / "mysql").exists():
        _chown_mysql(datadir)
        run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={datadir}",
             "--skip-test-db", "--auth-root-authentication-method=socket"], timeout=120)
    return cnf


def position_file(dirs: NodeDirs) -> Path:
    """Where mac-galera-start publishes the recovered position (the VM's /run/mac-galera)."""
    return dirs.run / "galera-position"


def start_clustercheck(state: LabState, ns: str, node: Node, dirs: NodeDirs) -> Proc:
    argv = mysql.clustercheck_argv(str(script_path("clustercheck.py")), node.ip,
                                   mysql_paths(dirs).socket, position_file=str(position_file(dirs)))
    return spawn(state, ns, node.name, "clustercheck", argv, dirs, "clustercheck.log")


def start_galera(state: LabState, ns: str, node: Node, topology: Topology, dirs: NodeDirs,
                 cnf: Path, timeout_s: float = 180, first_deploy: bool = False) -> None:
    """Run mac-galera-start in the namespace; it joins or bootstraps and waits for Synced.

    mariadbd is started in the background by the script's start command and stays in the
    script's process group, which the state records.
    """
    proc = spawn_galera(state, ns, node, topology, dirs, cnf, timeout_s, first_deploy)
    wait_galera(proc, node, dirs, timeout_s)


def spawn_galera(state: LabState, ns: str, node: Node, topology: Topology, dirs: NodeDirs,
                 cnf: Path, timeout_s: float = 180, first_deploy: bool = False) -> Proc:
    """Start mac-galera-start without waiting for it (several nodes at once: a power-on)."""
    log = shlex.quote(str(dirs.log / "mariadbd.log"))
    defaults = f"--defaults-file={shlex.quote(str(cnf))}"
    # As Debian's mariadb.service: galera_recovery finds the position a killed server reached
    # (grastate says seqno -1), so it rejoins by IST instead of a full SST that desyncs the donor.
    def start(extra: str) -> str:
        return (f"{{ pos=$(galera_recovery {defaults}) && exec mariadbd {defaults} $pos{extra}; }}"
                f" >>{log} 2>&1 &")

    argv = mysql.galera_start_argv(
        str(script_path("galera_start.py")), node, topology, mysql_paths(dirs).datadir,
        start_cmd=start(""), bootstrap_cmd=start(" --wsrep-new-cluster"),
        recover_cmd=f"galera_recovery {defaults}", position_file=str(position_file(dirs)),
        first_deploy=first_deploy)
    argv += ["--wait", str(timeout_s)]
    return spawn(state, ns, node.name, "galera-start", argv, dirs, "galera-start.log")


def wait_galera(proc: Proc, node: Node, dirs: NodeDirs, timeout_s: float = 180) -> None:
    """Wait for mac-galera-start to exit; LabError unless it exited 0 (Synced)."""
    try:
        code = CHILDREN[proc.pid].wait(timeout_s + 10)
    except subprocess.TimeoutExpired:
        raise LabError(f"mac-galera-start on {node.name} did not finish in {timeout_s} s") from None
    if code != 0:
        tail = (dirs.log / "galera-start.log").read_text()[-800:]
        raise LabError(f"mac-galera-start on {node.name} exited {code}:\n{tail}")


def sql(ns: str, dirs: NodeDirs, query: str, stdin: str | None = None,
        timeout: float = 20) -> str:
    argv = ["ip", "netns", "exec", ns, "mariadb", "--no-defaults", "-uroot",
            f"--socket={mysql_paths(dirs).socket}", "-N", "-B"]
    if stdin is None:
        argv += ["-e", query]
    return run(argv, input=stdin, timeout=timeout).stdout


# ---- web ------------------------------------------------------------------------------------

def start_web(state: LabState, ns: str, node: Node, topology: Topology, dirs: NodeDirs,
              app_password: str) -> Proc:
    paths = apache_paths(dirs)
    for d in (dirs.root, dirs.log, dirs.run):
        d.mkdir(parents=True, exist_ok=True)
    # The app's files as the role writes them into a VM (www-data may not enter the checkout).
    for name, text in web.app_sources().items():
        target = Path(paths.docroot) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    config = Path(paths.app_config)
    config.write_text(web.render_app_config(node.name, web.db_hosts(topology), app_password))
    shutil.chown(config, "root", paths.group)
    config.chmod(0o640)
    conf = dirs.root / "httpd.conf"
    conf.write_text(web.render_apache_conf(node.name, node.ip, paths))
    # A killed node's pid file survives (on a VM /run is emptied by the reboot).
    Path(paths.pid_file).unlink(missing_ok=True)
    # -D FOREGROUND instead of the VM's `-k start`: same config, but the parent stays our child.
    return spawn(state, ns, node.name, "apache2",
                 ["apache2", "-f", str(conf), "-D", "FOREGROUND"], dirs, "apache2.out")


# ---- lb -------------------------------------------------------------------------------------

def start_haproxy(state: LabState, ns: str, node: Node, topology: Topology, dirs: NodeDirs) -> Proc:
    for d in (dirs.root, dirs.log, dirs.run):
        d.mkdir(parents=True, exist_ok=True)
    cfg = dirs.root / "haproxy.cfg"
    cfg.write_text(lb.render_haproxy_cfg(node.name, node.ip, lb.backends(topology, Role.WEB),
                                         lb.backends(topology, Role.MYSQL), haproxy_paths(dirs),
                                         vip=topology.network.vip))
    if topology.network.vip is not None:
        # The VM's sysctl.d file (keepalived.SYSCTL_CONF); per namespace here.
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{keepalived.NONLOCAL_BIND}=1"])
    run(["haproxy", "-c", "-q", "-f", str(cfg)])
    return spawn(state, ns, node.name, "haproxy", haproxy_argv(dirs), dirs, "haproxy.log")


def haproxy_argv(dirs: NodeDirs) -> list[str]:
    return ["haproxy", "-db", "-f", str(dirs.root / "haproxy.cfg")]


def keepalived_paths(dirs: NodeDirs) -> keepalived.KeepalivedPaths:
    """All LBs share one PID namespace here: keepalived tracks its own HAProxy by command line."""
    return keepalived.KeepalivedPaths(haproxy_process=tuple(haproxy_argv(dirs)))


def start_keepalived(state: LabState, ns: str, node: Node, topology: Topology,
                     dirs: NodeDirs) -> Proc:
    """keepalived in the LB's namespace (VRRP only), with the config a VM gets but for paths."""
    assert topology.network.vip is not None
    # A killed LB's VIP stays on its eth0 (a VM's reboot clears it): gone before it is back.
    run(["ip", "-n", ns, "link", "del", keepalived.VMAC_INTERFACE], check=False)
    for pid_file in ("keepalived.pid", "keepalived-vrrp.pid"):
        (dirs.run / pid_file).unlink(missing_ok=True)  # a killed one's (a reboot empties /run)
    conf = dirs.root / "keepalived.conf"
    conf.write_text(keepalived.render_keepalived_conf(
        node.name, node.ip, keepalived.peers(node, topology), topology.network.vip,
        topology.network.prefix_len, keepalived.priority(node, topology), keepalived_paths(dirs)))
    # Started in the root namespace and moving itself into the LB's (--namespace): the kernel's
    # process events (vrrp_track_process) reach only listeners opened in the initial namespace;
    # from inside (`ip netns exec`) keepalived gets "connection refused" and stays in FAULT.
    argv = ["keepalived", "--dont-fork", "--log-console", "--no-syslog", "--vrrp",
            "--namespace", ns, "--use-file", str(conf), "--pid", str(dirs.run / "keepalived.pid"),
            "--vrrp_pid", str(dirs.run / "keepalived-vrrp.pid")]
    return spawn(state, ns, node.name, "keepalived", argv, dirs, "keepalived.log", enter=False)


# ---- hosts ----------------------------------------------------------------------------------

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself: it must be started by its absolute path
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; the package's unit creates it


def render_sshd_config(address: str, host_key: Path, pid_file: Path) -> str:
    """A real sshd on the host's management address that lets nobody in: the watchdog only needs
    the port to answer, as on a real host (no keys, no passwords, no PAM, no DNS lookups)."""
    return "\n".join([
        "Port 22",
        f"ListenAddress {address}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",
        "AuthorizedKeysFile none",
        "PubkeyAuthentication no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        "UsePAM no",
        "UseDNS no",
        "LogLevel ERROR",  # each watchdog probe is a connection closed before auth
        "",
    ])


def start_sshd(state: LabState, ns: str, host: str, address: str, dirs: NodeDirs) -> Proc:
    """sshd in the host's management namespace, listening on ADDRESS:22 (what the watchdog probes)."""
    for d in (dirs.root, dirs.log, dirs.run):
        d.mkdir(parents=True, exist_ok=True)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    key = dirs.root / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"maclab-{host}", "-f", str(key)])
    pid_file = dirs.run / "sshd.pid"
    pid_file.unlink(missing_ok=True)  # a killed host's pid file survives (a reboot empties /run)
    conf = dirs.root / "sshd_config"
    conf.write_text(render_sshd_config(address, key, pid_file))
    run([SSHD, "-t", "-f", str(conf)])
    # -D: stays our child (its process group is recorded); -e: log to stderr, i.e. sshd.log
    return spawn(state, ns, f"h-{host}", "sshd", [SSHD, "-D", "-e", "-f", str(conf)], dirs,
                 "sshd.log")


def start_garbd(state: LabState, ns: str, node: Node, topology: Topology, dirs: NodeDirs) -> Proc:
    dirs.log.mkdir(parents=True, exist_ok=True)
    argv = lb.garbd_argv(node.name, node.ip, [n.ip for n in topology.nodes_of(Role.MYSQL)],
                         topology.cluster_name)
    return spawn(state, ns, node.name, "garbd", argv, dirs, "garbd.log")
