"""`python -m lab up --stack lab` / `python -m lab down`: the lab for people."""

from __future__ import annotations

import signal
import sys
import time
from typing import Annotated

import typer

from lab import daemons
from lab.cluster import Lab, LabError, down, tcp_open
from lab.requirements import skip_reason

app = typer.Typer(add_completion=False, help="The MAC cluster for real on this machine (root).")


def _table(lab: Lab) -> str:
    header = f"{'node':<8} {'role':<6} {'host':<10} {'ip':<15} {'health':<7} url"
    lines = [header, "-" * len(header)]
    for s in lab.status():
        role = lab.node(s.node).role.value
        health = str(s.status) if s.status is not None else "down"
        lines.append(f"{s.node:<8} {role:<6} {s.host:<10} {s.ip:<15} {health:<7} {s.health_url}")
    for host in lab.topology.hosts.values():
        kind = "spare" if host.name in lab.topology.spares else "host"
        ssh = "22" if tcp_open(host.address, 22) else "down"
        lines.append(f"{host.name:<8} {kind:<6} {host.name:<10} {host.address:<15} {ssh:<7} "
                     "(management address, sshd)")
    return "\n".join(lines)


@app.command()
def up(stack: Annotated[str, typer.Option(help="stack file stacks/Pulumi.<stack>.yaml")] = "lab",
       ) -> None:
    """Bring the cluster up, print its status, keep it running until Ctrl-C, then clean up."""
    reason = skip_reason()
    if reason:
        typer.echo(f"cannot run the lab: {reason}", err=True)
        raise typer.Exit(2)
    lab = Lab.from_stack(stack)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # cleanup below runs on SIGTERM too
    try:
        seconds = lab.up()
        typer.echo(f"cluster up in {seconds:.1f} s; app at {lab.url}/  (Ctrl-C to stop)\n")
        typer.echo(_table(lab))
        while True:  # reap daemons that others kill (drills run from another process)
            time.sleep(0.5)
            daemons.reap()
    except LabError as err:
        typer.echo(f"lab failed: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("\nstopping")
    finally:
        for line in down(lab.dir):
            typer.echo(f"removed {line}")


@app.command(name="down")
def down_command() -> None:
    """Remove everything a lab created: processes, namespaces, bridge, files (also after a crash)."""
    for line in down():
        typer.echo(f"removed {line}")


if __name__ == "__main__":
    app()
