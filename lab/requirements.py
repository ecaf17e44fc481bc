"""Can the lab run here? One clear reason when it cannot (the tests skip with it)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from components.roles import web

BINARIES = ("ip", "tc", "mariadbd", "mariadb", "mariadb-install-db", "garbd", "haproxy", "apache2",
            "keepalived",
            "rsync", "python3",
            "sshd", "ssh-keygen")
PACKAGES = ("apache2 libapache2-mod-php php-mysql mariadb-server galera-4 galera-arbitrator-4 "
            "haproxy keepalived iproute2 rsync openssh-server")


def skip_reason() -> str | None:
    """None when the lab can run; else why not, and what to do."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, daemons as other users): run as root"
    missing = [b for b in BINARIES if shutil.which(b) is None]
    php = Path(web.VM_PATHS.modules_dir) / web.VM_PATHS.php_module
    if not php.exists():
        missing.append(str(php))
    if not Path(web.VM_PATHS.modules_dir, "mod_mpm_prefork.so").exists():
        missing.append("mod_mpm_prefork.so")
    if not Path("/usr/lib/galera/libgalera_smm.so").exists():
        missing.append("/usr/lib/galera/libgalera_smm.so")
    if missing:
        return f"missing {', '.join(missing)}: apt-get install -y {PACKAGES}"
    probe = "maclab-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    if made.returncode != 0:
        return f"network namespaces are unavailable here: {made.stderr.strip()}"
    return None
