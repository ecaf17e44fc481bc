"""A throw-away sshd on 127.0.0.1 for the engine tests (qemu+ssh with a port, remote:Command).

Its own host key, client key, authorized_keys and config in a temporary directory; root may log
in with the client key only; stream-local forwarding on (libvirt's ssh transport tunnels to the
libvirtd socket). Started in the foreground as a child, stopped by PID.
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


def start(work: Path) -> Sshd:
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key, key = work / "host_ed25519", work / "client_ed25519"
    for path in (host_key, key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    (work / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    port = _free_port()
    config = work / "sshd_config"
    config.write_text(f"""ListenAddress 127.0.0.1
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
    log = open(work / "sshd.log", "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sshd did not start: " + (work / "sshd.log").read_text()[-2000:]) from None
            time.sleep(0.1)
    return Sshd(port, key, proc)
