"""The mysql role: MariaDB + Galera, the clustercheck endpoint, safe start and the app schema."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.roles.cloud_config import WriteFile
from components.roles.common import (
    APP_DB_NAME,
    APP_DB_USER,
    LIB_DIR,
    script_source,
    systemd_unit,
    wrapper_script,
)
from components.roles.escape import cnf_value, comment, ip, systemd_exec
from components.topology import GALERA_PORT, HEALTH_ENDPOINTS, MYSQL_PORT, Node, Role, Topology

PACKAGES = ("mariadb-server", "galera-4", "rsync", "python3")
GALERA_PROVIDER = "/usr/lib/galera/libgalera_smm.so"
IST_PORT = 4568
SST_PORT = 4444

# Failure detection, identical on every member (garbd too): LAB-NOTES says mixed values break
# joins, and keepalive_period must stay below suspect_timeout / 3. A dead member blocks commits
# until it is evicted; these values bring that down from ~6 s (defaults) to about 1 s.
EVS_OPTIONS: dict[str, str] = {
    "evs.keepalive_period": "PT0.3S",
    "evs.suspect_timeout": "PT1S",
    "evs.inactive_timeout": "PT1.5S",
    "evs.inactive_check_period": "PT0.25S",
    "evs.install_timeout": "PT1.5S",
    "evs.join_retrans_period": "PT0.3S",
}


@dataclass(frozen=True)
class MysqlPaths:
    """Where one MariaDB instance keeps its files; a VM uses the Debian defaults."""

    datadir: str = "/var/lib/mysql"
    socket: str = "/run/mysqld/mysqld.sock"
    pid_file: str = "/run/mysqld/mysqld.pid"
    log_error: str = "/var/log/mysql/error.log"
    tmpdir: str = "/tmp"
    user: str = "mysql"


VM_PATHS = MysqlPaths()
CNF_PATH = "/etc/mysql/mariadb.conf.d/99-mac-galera.cnf"
CLUSTERCHECK_SCRIPT = f"{LIB_DIR}/clustercheck.py"
GALERA_START_SCRIPT = f"{LIB_DIR}/galera_start.py"
GALERA_START = "/usr/local/sbin/mac-galera-start"
CLUSTERCHECK_UNIT = "/etc/systemd/system/mac-clustercheck.service"
GALERA_START_UNIT = "/etc/systemd/system/mac-galera-start.service"
# After an unclean full outage mac-galera-start publishes the recovered position here and the
# clustercheck service serves it (GET /position) to the other DB node; /run empties at boot.
POSITION_FILE = "/run/mac-galera/position"
RECOVER_CMD = "galera_recovery"  # Debian's wrapper of `mariadbd --wsrep-recover`
# Only on the stack's first deploy may a fresh datadir found the cluster (galera_start.decide).
FIRST_DEPLOY_FLAG = "--first-deploy"


def provider_options(node_ip: str, galera_port: int = GALERA_PORT, ist_port: int = IST_PORT,
                     extra: dict[str, str] | None = None) -> str:
    node_ip = ip(node_ip)
    options = {
        "gmcast.listen_addr": f"tcp://{node_ip}:{galera_port}",
        "ist.recv_addr": f"{node_ip}:{ist_port}",
        "gcache.size": "256M",
        **EVS_OPTIONS,
        **(extra or {}),
    }
    return "; ".join(f"{k}={v}" for k, v in options.items())


def render_galera_cnf(node_name: str, node_ip: str, cluster_ips: Sequence[str], cluster_name: str,
                      paths: MysqlPaths, port: int = MYSQL_PORT, galera_port: int = GALERA_PORT,
                      sst_method: str = "rsync", provider: str = GALERA_PROVIDER) -> str:
    """The server config of one Galera data node (read after Debian's 50-server.cnf).

    Every value is quoted for the option file's syntax (escape.cnf_value): a hostile name stays
    one value, never a line of its own.
    """
    members = ",".join(f"{ip(member)}:{galera_port}" for member in cluster_ips)
    node_ip = ip(node_ip)
    p = MysqlPaths(*(cnf_value(v) for v in (paths.datadir, paths.socket, paths.pid_file,
                                            paths.log_error, paths.tmpdir, paths.user)))
    return f"""\
# MAC: MariaDB Galera data node {comment(node_name)} (rendered by components/roles/mysql.py)
[mysqld]
user                     = {p.user}
datadir                  = {p.datadir}
socket                   = {p.socket}
pid-file                 = {p.pid_file}
log-error                = {p.log_error}
tmpdir                   = {p.tmpdir}
bind-address             = {node_ip}
port                     = {port}
skip-name-resolve        = ON
max_connections          = 500
default_storage_engine   = InnoDB
binlog_format            = ROW
innodb_autoinc_lock_mode = 2
# Durability comes from synchronous replication to the other node; a SIGKILL of mariadbd
# keeps the OS page cache, so 2 loses nothing acknowledged in the drills.
innodb_flush_log_at_trx_commit = 2

wsrep_on                 = ON
wsrep_provider           = {cnf_value(provider)}
wsrep_cluster_name       = {cnf_value(cluster_name)}
wsrep_cluster_address    = gcomm://{members}
wsrep_node_name          = {cnf_value(node_name)}
wsrep_node_address       = {node_ip}:{galera_port}
wsrep_node_incoming_address = {node_ip}:{port}
wsrep_sst_method         = {cnf_value(sst_method)}
wsrep_sst_receive_address = {node_ip}:{SST_PORT}
wsrep_provider_options   = "{provider_options(node_ip, galera_port)}"
"""


def clustercheck_argv(script: str, node_ip: str, socket: str, client: str = "mariadb",
                      python: str = "python3", position_file: str = POSITION_FILE) -> list[str]:
    port = HEALTH_ENDPOINTS[Role.MYSQL].port
    return [python, script, "--bind", node_ip, "--port", str(port), "--socket", socket,
            "--client", client, "--position-file", position_file]


def galera_start_argv(script: str, node: Node, topology: Topology, datadir: str,
                      start_cmd: str, bootstrap_cmd: str, after_cmd: str = "",
                      python: str = "python3", recover_cmd: str = RECOVER_CMD,
                      position_file: str = POSITION_FILE, first_deploy: bool = False) -> list[str]:
    """The mac-galera-start command line for `node`; the lab passes its own start commands.

    `first_deploy` lets a fresh first DB node found the cluster; a VM's installed command never
    has it (the post-boot step adds it on the stack's first deploy only).
    """
    dbs = topology.nodes_of(Role.MYSQL)
    check = HEALTH_ENDPOINTS[Role.MYSQL]
    argv = [python, script, "--self", node.ip,
            "--peers", ",".join(n.ip for n in dbs if n.name != node.name),
            "--db-nodes", ",".join(n.ip for n in dbs),
            "--arbitrators", topology.arbitrator.ip,
            "--datadir", datadir, "--check-port", str(check.port), "--check-path", check.path,
            "--galera-port", str(GALERA_PORT),
            "--start-cmd", start_cmd, "--bootstrap-cmd", bootstrap_cmd,
            "--recover-cmd", recover_cmd, "--position-file", position_file]
    if after_cmd:
        argv += ["--after-cmd", after_cmd]
    if dbs and dbs[0].name == node.name:
        argv.append("--first")
    if first_deploy:
        argv.append(FIRST_DEPLOY_FLAG)
    return argv


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def app_schema_sql(app_password: str, root_password: str | None = None,
                   database: str = APP_DB_NAME, user: str = APP_DB_USER) -> str:
    """Idempotent SQL (fed on stdin, never on a command line) for the app's schema and user."""
    lines = [
        f"CREATE DATABASE IF NOT EXISTS `{database}`;",
        f"CREATE TABLE IF NOT EXISTS `{database}`.`visits` (",
        "  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,",
        "  token VARCHAR(64) NULL,",
        "  web VARCHAR(64) NOT NULL DEFAULT '',",
        "  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),",
        "  UNIQUE KEY token (token)",
        ") ENGINE=InnoDB;",
        # The count as one row updated with each new visit: COUNT(*) scans the whole table and
        # cost ~10 ms per request at 12k rows here.
        f"CREATE TABLE IF NOT EXISTS `{database}`.`visit_count` (",
        "  id TINYINT UNSIGNED NOT NULL PRIMARY KEY,",
        "  n BIGINT UNSIGNED NOT NULL",
        ") ENGINE=InnoDB;",
        f"INSERT IGNORE INTO `{database}`.`visit_count` (id, n) VALUES (1, 0);",
        f"CREATE USER IF NOT EXISTS {_sql_string(user)}@'%' IDENTIFIED BY {_sql_string(app_password)};",
        f"ALTER USER {_sql_string(user)}@'%' IDENTIFIED BY {_sql_string(app_password)};",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO {_sql_string(user)}@'%';",
    ]
    if root_password is not None:
        # unix_socket first: local tools (clustercheck, mac-galera-start) keep working without it.
        lines.append("ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR "
                     f"mysql_native_password USING PASSWORD({_sql_string(root_password)});")
    lines.append("FLUSH PRIVILEGES;")
    return "\n".join(lines) + "\n"


def _clustercheck_unit(node_ip: str) -> str:
    argv = clustercheck_argv(CLUSTERCHECK_SCRIPT, node_ip, VM_PATHS.socket, python="/usr/bin/python3")
    return systemd_unit("MAC Galera clustercheck (HTTP 200 only when Synced)", [
        f"ExecStart={systemd_exec(argv)}",
        "Restart=always",
        "RestartSec=1",
    ])


# Every boot after the first starts MariaDB through mac-galera-start (join, or after a full outage
# compare positions and bootstrap the most advanced node), never through a plain mariadb.service
# start, which cannot form a Primary component when every DB node went down at once.
GALERA_START_UNIT_TEXT = systemd_unit(
    "MAC: start Galera safely (join, or recover a full outage by comparing positions)",
    ["Type=oneshot", "RemainAfterExit=yes", f"ExecStart={GALERA_START}", "TimeoutStartSec=infinity"],
    after=("network-online.target", "mac-clustercheck.service"),
)


def files(node: Node, topology: Topology) -> list[WriteFile]:
    db_ips = [n.ip for n in topology.nodes_of(Role.MYSQL)]
    start = galera_start_argv(GALERA_START_SCRIPT, node, topology, VM_PATHS.datadir,
                              start_cmd="systemctl start mariadb", bootstrap_cmd="galera_new_cluster",
                              python="/usr/bin/python3")
    return [
        WriteFile(CNF_PATH, render_galera_cnf(node.name, node.ip, db_ips, topology.cluster_name,
                                              VM_PATHS)),
        WriteFile(CLUSTERCHECK_SCRIPT, script_source("clustercheck.py"), "0755"),
        WriteFile(GALERA_START_SCRIPT, script_source("galera_start.py"), "0755"),
        WriteFile(GALERA_START, wrapper_script(start), "0755"),
        WriteFile(CLUSTERCHECK_UNIT, _clustercheck_unit(node.ip)),
        WriteFile(GALERA_START_UNIT, GALERA_START_UNIT_TEXT),
    ]


def runcmd() -> list[str | list[str]]:
    # mariadb is started by mac-galera-start: the first time by the post-boot step (db1 before
    # db2), at every later boot by its unit (enabled, not started now). mariadb.service itself
    # stays disabled: a plain start only ever joins, which after a full outage never succeeds.
    return [
        ["systemctl", "disable", "--now", "mariadb"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "mac-clustercheck.service"],
        ["systemctl", "enable", "mac-galera-start.service"],
    ]
