"""The web role: Apache + mod_php serving app/, with the DB settings in a small JSON file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from components.roles.cloud_config import WriteFile
from components.roles.common import APP_DB_NAME, APP_DB_USER, systemd_unit
from components.roles.escape import apache_arg, comment, ip
from components.topology import HEALTH_ENDPOINTS, MYSQL_PORT, Node, Role, Topology

PACKAGES = ("apache2", "libapache2-mod-php", "php-mysql")
APP_SOURCE_DIR = Path(__file__).resolve().parents[2] / "app"
APP_FILES = ("index.php", "health.php", "alive.php", "lib/db.php")


@dataclass(frozen=True)
class ApachePaths:
    """Where one Apache instance keeps its files; a VM uses these defaults."""

    server_root: str = "/etc/apache2"
    docroot: str = "/var/www/mac"
    runtime_dir: str = "/run/mac-apache"
    pid_file: str = "/run/mac-apache/httpd.pid"
    error_log: str = "/var/log/apache2/mac-error.log"
    access_log: str = "/var/log/apache2/mac-access.log"
    app_config: str = "/etc/mac/app.json"
    modules_dir: str = "/usr/lib/apache2/modules"
    php_module: str = "libphp8.2.so"  # Debian 12 (bookworm)
    mime_types: str = "/etc/mime.types"
    user: str = "www-data"
    group: str = "www-data"


VM_PATHS = ApachePaths()
CONF_PATH = "/etc/apache2/mac-httpd.conf"
UNIT_PATH = "/etc/systemd/system/mac-apache.service"


def render_apache_conf(node_name: str, listen_ip: str, paths: ApachePaths,
                       port: int = HEALTH_ENDPOINTS[Role.WEB].port) -> str:
    """A complete stand-alone httpd config (no Debian envvars/apache2.conf needed)."""
    p = paths
    return f"""\
# MAC: Apache + mod_php for web node {comment(node_name)} (rendered by components/roles/web.py)
ServerRoot "{p.server_root}"
ServerName {apache_arg(node_name)}
PidFile "{p.pid_file}"
DefaultRuntimeDir "{p.runtime_dir}"
Listen {ip(listen_ip)}:{port}
User {p.user}
Group {p.group}

LoadModule mpm_prefork_module "{p.modules_dir}/mod_mpm_prefork.so"
LoadModule authz_core_module "{p.modules_dir}/mod_authz_core.so"
LoadModule mime_module "{p.modules_dir}/mod_mime.so"
LoadModule dir_module "{p.modules_dir}/mod_dir.so"
LoadModule env_module "{p.modules_dir}/mod_env.so"
LoadModule php_module "{p.modules_dir}/{p.php_module}"

# Enough idle children that a burst (the other node died, HAProxy sends everything here) does
# not wait for forks.
StartServers            16
MinSpareServers         16
MaxSpareServers         48
MaxRequestWorkers       150
MaxConnectionsPerChild  0
ListenBacklog           1024
KeepAlive               On
KeepAliveTimeout        15
MaxKeepAliveRequests    0
Timeout                 30

ErrorLog "{p.error_log}"
LogLevel warn
LogFormat "%h %l %u %t \\"%r\\" %>s %b %D" mac
CustomLog "{p.access_log}" mac
TypesConfig "{p.mime_types}"

DocumentRoot "{p.docroot}"
DirectoryIndex index.php
SetEnv MAC_APP_CONFIG "{p.app_config}"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{p.docroot}">
    Options None
    AllowOverride None
    Require all granted
</Directory>
<Directory "{p.docroot}/lib">
    Require all denied
</Directory>
<FilesMatch "\\.php$">
    SetHandler application/x-httpd-php
</FilesMatch>
"""


# The app's DB time budget (app/lib/db.php): how long a page keeps trying the DB hosts before it
# answers 503; the attempt in progress when it runs out may add one connect timeout. HAProxy's
# server timeout (lb.WEB_SERVER_TIMEOUT_S) is budget + connect timeout: a slow but healthy page
# is not cut and replayed, and a request on a silent web node waits no longer than that. A query
# blocked until Galera evicts a dead member (~1.5 s) is an attempt in progress: the budget need
# not cover it. Was 4 s for index.php, longer than any LB server timeout that helps a host death.
APP_DB_BUDGET_S = 1.5
APP_DB_CONNECT_TIMEOUT_S = 1  # whole seconds: MYSQLI_OPT_CONNECT_TIMEOUT takes an int


def render_app_config(node_name: str, db_hosts: Sequence[str], password: str,
                      port: int = MYSQL_PORT, database: str = APP_DB_NAME,
                      user: str = APP_DB_USER) -> str:
    """The app's DB settings. `db_hosts` in order of preference; the app moves on when one fails."""
    return json.dumps({
        "node": node_name,
        "hosts": list(db_hosts),
        "port": port,
        "database": database,
        "user": user,
        "password": password,
        "connect_timeout_s": APP_DB_CONNECT_TIMEOUT_S,
        "read_timeout_s": 5,
        "retry_budget_s": APP_DB_BUDGET_S,
        "health_budget_s": APP_DB_BUDGET_S,
    }, indent=2) + "\n"


def db_hosts(topology: Topology) -> list[str]:
    """The LB's DB frontend first (it follows clustercheck; a pair's at its VIP, which follows
    the live LB), then every DB node directly.

    The direct fallbacks start with the LB's backup, not its preferred writer: when the LB path
    fails, the likeliest cause is that this writer died, so the app goes where the LB is moving
    everyone anyway instead of spending its connect timeout on a dead (maybe silent) node.
    """
    db = [n.ip for n in topology.nodes_of(Role.MYSQL)]
    lbs = [topology.network.vip] if topology.network.vip else [n.ip for n in topology.nodes_of(Role.LB)]
    return [*lbs, *db[1:], *db[:1]]


def app_sources() -> dict[str, str]:
    """The PHP application, relative path -> text (what goes under the docroot)."""
    return {name: (APP_SOURCE_DIR / name).read_text(encoding="utf-8") for name in APP_FILES}


def _unit() -> str:
    return systemd_unit(f"MAC Apache + mod_php (stand-alone config {CONF_PATH})", [
        "Type=forking",
        "RuntimeDirectory=mac-apache",
        f"PIDFile={VM_PATHS.pid_file}",
        f"ExecStart=/usr/sbin/apache2 -f {CONF_PATH} -k start",
        f"ExecReload=/usr/sbin/apache2 -f {CONF_PATH} -k graceful",
        f"ExecStop=/usr/sbin/apache2 -f {CONF_PATH} -k graceful-stop",
        "KillMode=mixed",
        "Restart=always",
        "RestartSec=1",
    ])


def files(node: Node, topology: Topology, app_password: str) -> list[WriteFile]:
    app = [WriteFile(f"{VM_PATHS.docroot}/{name}", text) for name, text in app_sources().items()]
    return [
        WriteFile(CONF_PATH, render_apache_conf(node.name, node.ip, VM_PATHS)),
        WriteFile(VM_PATHS.app_config, render_app_config(node.name, db_hosts(topology), app_password),
                  "0640", "root:www-data"),
        WriteFile(UNIT_PATH, _unit()),
        *app,
    ]


def runcmd() -> list[str | list[str]]:
    return [
        ["systemctl", "disable", "--now", "apache2"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "mac-apache.service"],
    ]
