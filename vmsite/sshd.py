"""A throw-away sshd: on 127.0.0.1 for the engine tests (qemu+ssh with a port, remote:Command), or
on a host's management address inside the vm stack's network namespace (vmsite/site.py).

Its own host key, client key (or one given), authorized_keys and config in its directory; root
may log in with the client key only; stream-local forwarding on (libvirt's ssh transport tunnels
to the libvirtd socket). Started in the foreground as a child, stopped by PID.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def missing() -> str | None:
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        return "sshd not installed: apt-get install openssh-server"
    return None


@dataclass
class Sshd:
    port: int
    key: Path  # the client's private key (OpenSSH format)
    proc: subprocess.Popen[bytes]

    @property
    def private_key(self) -> str:
        return self.key.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    """A new ed25519 key pair without passphrase at `path` (+ `.pub`)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mac", "-f", str(path)],
                   check=True)
    return path


def start(work: Path, address: str = "127.0.0.1", port: int | None = None,
          netns: str | None = None, client_key: Path | None = None) -> Sshd:
    """An sshd on `address:port` (a free loopback port by default), inside `netns` if given,
    letting in `client_key` (a new one in `work` if None)."""
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key = work / "host_ed25519"
    if not host_key.exists():
        keygen(host_key)
    key = client_key or work / "client_ed25519"
    if not key.exists():
        keygen(key)
    (work / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = port or _free_port()
    config = work / "sshd_config"
    config.write_text(f"""ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile {work / "sshd.pid"}
AuthorizedKeysFile {work / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
AcceptEnv MAC_*
""")
    log_path = work / "sshd.log"
    log_path.write_bytes(b"")
    log = open(log_path, "ab")  # noqa: SIM115 (the child keeps it)
    argv = [SSHD, "-D", "-e", "-f", str(config)]
    if netns is not None:  # `ip netns exec` execs: the PID stays sshd's
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 15
    # "Server listening on ADDRESS port PORT.": sshd bound its socket (seen from any namespace).
    while f"Server listening on {address} port {port}" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"sshd did not start on {address}:{port}: "
                               + log_path.read_text(errors="replace")[-2000:])
        time.sleep(0.05)
    return Sshd(port, key, proc)
