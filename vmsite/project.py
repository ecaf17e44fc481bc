"""The working copy of the project in the run directory, and the Pulumi CLI that runs in it.

The tracked `stacks/Pulumi.vm.yaml` is a template that `make vm` never writes: its working copy
gets this machine's libvirt URIs (the host's socket behind its sshd, the run directory's key)
and, through `pulumi config set`, the SSH key pair (the private key as a secret). The program and
its components are linked from the checkout, the stack file is the working copy's own (the
watchdog rewrites it on a failover). Pulumi runs inside the namespace with the engine from
`make engine` (.engine/bin and its plugins), a file backend and a per-run passphrase.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

from components.stack_file import load_topology, write_topology
from components.topology import Topology
from vmsite import net
from vmsite.state import REPO, STACK, RunDir

ENGINE = REPO / ".engine"
TEMPLATE = REPO / "stacks" / f"Pulumi.{STACK}.yaml"
COPIED = ("__main__.py", "Pulumi.yaml")
LINKED = ("components", "app")


def images_dir() -> Path:
    return Path(os.environ.get("MAC_IMAGES_DIR", REPO / ".images"))


def engine_missing() -> str | None:
    for name in ("pulumi", "pulumi-language-python"):
        if not os.access(ENGINE / "bin" / name, os.X_OK):
            return f"{ENGINE / 'bin' / name} not built: run `make engine`"
    if not (ENGINE / "home" / "plugins").is_dir():
        return f"no provider plugins in {ENGINE / 'home' / 'plugins'}: run `make engine`"
    if not (REPO / ".venv" / "bin" / "python").exists():
        return "no project virtualenv: run `make venv`"
    return None


def host_uri(uri: str, socket: Path, key: Path) -> str:
    """The template's `qemu+ssh://root@ADDRESS/system` with this machine's query: the libvirtd
    socket behind the host's sshd, the run directory's key, no host key check (sshd's host key is
    made per run)."""
    base = uri.split("?", 1)[0]
    return f"{base}?{urlencode({'socket': str(socket), 'keyfile': str(key), 'no_verify': '1'})}"


def machine_topology(template: Topology, run: RunDir) -> Topology:
    """The template's topology with every host's URI pointing at this run's libvirtd and key."""
    hosts = {name: replace(h, uri=host_uri(h.uri, run.host_dir(name) / "run" / "libvirt-sock",
                                           run.key))
             for name, h in template.hosts.items()}
    return template.with_(hosts=hosts)


def make_working_copy(run: RunDir, template: Path = TEMPLATE) -> Topology:
    """The project in `run.project`: the program copied, its packages and the venv linked, the
    images linked as `.images`, the stack file with this machine's URIs."""
    project = run.project
    (project / "stacks").mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy2(REPO / name, project / name)
    links = {**{name: REPO / name for name in LINKED}, ".venv": REPO / ".venv", ".images": images_dir()}
    for name, target in links.items():
        link = project / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    shutil.copy2(template, run.stack_file)
    topology = machine_topology(load_topology(template), run)
    write_topology(run.stack_file, topology)
    return topology


class PulumiFailed(RuntimeError):
    """A pulumi command exited non-zero; the message holds the last lines of its output."""


class Pulumi:
    """The real CLI in the working copy, inside the namespace."""

    def __init__(self, run: RunDir, netns: str) -> None:
        self.run = run
        self.netns = netns

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.update({
            "PATH": f"{ENGINE / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PULUMI_HOME": str(self.run.pulumi_home),
            "PULUMI_BACKEND_URL": f"file://{self.run.backend}",
            "PULUMI_CONFIG_PASSPHRASE_FILE": str(self.run.passphrase_file),
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "NO_COLOR": "1",
        })
        return env

    def prepare_home(self) -> None:
        self.run.pulumi_home.mkdir(parents=True, exist_ok=True)
        self.run.backend.mkdir(parents=True, exist_ok=True)
        plugins = self.run.pulumi_home / "plugins"
        if not plugins.is_symlink():
            plugins.symlink_to(ENGINE / "home" / "plugins")

    def __call__(self, *args: str, input: str | None = None, timeout: float = 1800,
                 on_line: Callable[[str], None] | None = None, check: bool = True,
                 extra_env: Mapping[str, str] | None = None) -> str:
        """Run `pulumi ARGS` in the namespace; its output (also appended to logs/pulumi.log) or
        PulumiFailed naming the last lines."""
        argv = net.argv(self.netns, [str(ENGINE / "bin" / "pulumi"), "--non-interactive",
                                     "--color", "never", *args])
        self.run.logs.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        env = {**self.env, **(extra_env or {})}
        with open(self.run.logs / "pulumi.log", "a", encoding="utf-8") as log:
            log.write(f"\n### {time.strftime('%H:%M:%S')} pulumi {' '.join(args)}\n")
            proc = subprocess.Popen(argv, cwd=self.run.project, env=env, text=True,
                                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if input is not None and proc.stdin is not None:
                proc.stdin.write(input)
                proc.stdin.close()
            deadline = time.monotonic() + timeout
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                log.write(line)
                log.flush()
                if on_line is not None:
                    on_line(line.rstrip("\n"))
                if time.monotonic() > deadline:
                    proc.kill()
            rc = proc.wait()
        if check and rc != 0:
            tail = "\n".join(lines[-25:])
            raise PulumiFailed(f"pulumi {' '.join(args[:2])} exited {rc}:\n{tail}")
        return "\n".join(lines)

    def init_stack(self, public_key: str, private_key: str) -> None:
        """The stack in the backend and its machine-specific config (the private key a secret)."""
        stacks = self("stack", "ls", "--json")
        if f'"name": "{STACK}"' not in stacks:
            self("stack", "init", STACK)
        self("config", "set", "--stack", STACK, "mac:sshPublicKey", public_key.strip())
        self("config", "set", "--stack", STACK, "--secret", "mac:sshPrivateKey", input=private_key)
