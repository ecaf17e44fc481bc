"""`mac-lab`: bring the lab up, break it (kill, stop, partition, slow), load it, watch it, revive it.

Every command but `up` acts on the lab another process runs (`make lab`), through its state file.
Exit codes: 0 done, 1 the action failed, 2 bad usage (unknown name, no netem, not root).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.live import Live

from lab import daemons
from lab.cluster import Lab, down
from lab.faults import Faults, LabFaults, UnknownTarget
from lab.load import Load, Outcome
from lab.lock import LabBusy, current_holder
from lab.netns import LabError, NetemUnavailable
from lab.requirements import skip_reason
from lab.state import LabState, lab_dir
from lab.status import Snapshot, collect, frames, render

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Play with the MAC lab: break it, load it, watch it, put it back (root).")

StackOption = Annotated[str, typer.Option(help="stack file stacks/Pulumi.<stack>.yaml")]
WatchdogOption = Annotated[Path | None, typer.Option(
    "--watchdog-state",
    help="A watchdog's --state-dir (its *.jsonl: journal, saved --json-log) or one such file: "
         "shows its last decision.")]
INTERVAL_S = 1.0
PIPE_WIDTH = 120  # rich assumes 80 columns when not on a terminal: the node table needs more


def console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)
DOWN_WAIT_S = 60.0  # the holder's own teardown (kill, wait, remove) takes a few seconds


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


def require_root() -> None:
    if os.geteuid() != 0:
        fail("mac-lab needs root (network namespaces, daemons as other users)", 2)


def running_lab(stack: str) -> Lab:
    """The lab this machine runs, or exit 1 saying there is none."""
    require_root()
    if not LabState.load(lab_dir()).namespaces:
        fail(f"no lab is running (nothing recorded in {lab_dir()}); start one with `make lab`")
    return Lab.from_stack(stack)


def act(stack: str) -> Faults:
    """The running cluster's fault primitives (the lab's; a VM stack's backend plugs in here)."""
    return LabFaults(running_lab(stack))


def parse_delay_ms(text: str) -> float:
    """`200ms`, `0.2s` or `200` (milliseconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*", text)
    if not match:
        fail(f"--delay {text!r}: give a duration like 200ms or 0.5s", 2)
    value = float(match.group(1))
    return value * 1000 if match.group(2) == "s" else value


def run_action(what: Iterator[str]) -> None:
    """Print each line of an action; one clear line and the exit code on failure, no traceback."""
    try:
        for line in what:
            typer.echo(line)
    except (UnknownTarget, NetemUnavailable) as err:
        fail(str(err), 2)
    except LabError as err:
        fail(f"failed: {err}")


# ---- the lab itself ---------------------------------------------------------------------------

@app.command()
def up(stack: StackOption = "lab", watchdog_state: WatchdogOption = None,
       watch: Annotated[bool, typer.Option(help="Show the live view (else one table).")] = True,
       ) -> None:
    """Bring the cluster up and show it live until Ctrl-C, then remove everything."""
    reason = skip_reason()
    if reason:
        fail(f"cannot run the lab: {reason}", 2)
    lab = Lab.from_stack(stack)
    for signum in (signal.SIGTERM, signal.SIGHUP):  # `make lab-down` elsewhere, a closed terminal
        signal.signal(signum, lambda *_: sys.exit(0))  # the `finally` below cleans up
    screen = console()
    try:
        seconds = lab.up()
        if lab.lock.stale:
            typer.echo(f"took over the lock of a lab that is gone ({lab.lock.stale.describe()})")
        typer.echo(f"cluster up in {seconds:.1f} s; app at {lab.url}/  (Ctrl-C to stop; "
                   "break it from another shell with `mac-lab --help`)")
        show(lab, screen, watch, watchdog_state, frame_count=0, reap=True)
        while True:  # without the live view: reap the daemons others kill, until Ctrl-C
            time.sleep(0.5)
            daemons.reap()
    except LabBusy as err:
        fail(str(err))
    except LabError as err:
        typer.echo(f"lab failed: {err}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("\nstopping")
    finally:
        try:
            for line in lab.teardown():
                typer.echo(f"removed {line}")
        except LabError as err:
            fail(f"cleanup failed: {err}; `make lab-down` retries")


@app.command(name="down")
def down_command() -> None:
    """Stop the running lab (its `make lab` process cleans up) and remove whatever is left."""
    require_root()
    holder = current_holder()
    if holder is not None and holder.pid != os.getpid():
        typer.echo(f"stopping the lab's process ({holder.describe()})")
        os.kill(holder.pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_WAIT_S
        while current_holder() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if current_holder() is not None:
            fail(f"pid {holder.pid} still holds the lab after {DOWN_WAIT_S:.0f} s; not touching it")
    try:
        for line in down():
            typer.echo(f"removed {line}")
    except LabError as err:
        fail(f"failed: {err}")


# ---- break ------------------------------------------------------------------------------------

@app.command()
def kill(node: Annotated[str, typer.Argument(help="a node: db1, web1, lb1, ...")],
         stack: StackOption = "lab") -> None:
    """Silent death of a node: link cut, then every process killed (a VM killed)."""
    faults = act(stack)

    def go() -> Iterator[str]:
        faults.kill_node(node)
        yield f"killed {node} (link cut, processes killed); `mac-lab revive {node}` brings it back"
    run_action(go())


@app.command(name="kill-host")
def kill_host(host: Annotated[str, typer.Argument(help="a host: lab1, lab2, ...")],
              stack: StackOption = "lab") -> None:
    """Silent death of a host: its links cut, its nodes and its sshd killed (power loss)."""
    faults = act(stack)

    def go() -> Iterator[str]:
        victims = faults.kill_host(host)
        yield (f"killed host {host} and its nodes {', '.join(victims) or '(none)'}; "
               f"`mac-lab revive {host}` powers it on")
    run_action(go())


@app.command(name="stop-service")
def stop_service(node: Annotated[str, typer.Argument(help="a node: db1, web1, lb1, ...")],
                 stack: StackOption = "lab") -> None:
    """The node's daemon dies (mariadbd, apache2 or haproxy); the machine stays up."""
    faults = act(stack)

    def go() -> Iterator[str]:
        what = faults.stop_service(node)
        yield f"stopped {what} on {node} (the node itself is up); `mac-lab revive {node}` restarts it"
    run_action(go())


@app.command()
def partition(host: Annotated[str, typer.Argument(help="a host: lab1, lab2, ...")],
              watchdog_only: Annotated[bool, typer.Option(
                  "--watchdog-only", help="Cut it off from the root namespace (the watchdog) only; "
                                          "the cluster still reaches it.")] = False,
              stack: StackOption = "lab") -> None:
    """Cut a live host off the network (its processes keep running): a split brain."""
    faults = act(stack)

    def go() -> Iterator[str]:
        faults.partition_host(host, watchdog_only)
        scope = "from the watchdog only" if watchdog_only else "from everything"
        yield f"partitioned {host} ({scope}); its processes still run; `mac-lab heal {host}` undoes it"
    run_action(go())


@app.command()
def heal(host: Annotated[str, typer.Argument(help="a partitioned host")],
         stack: StackOption = "lab") -> None:
    """Undo `partition`: the host's links and routes back."""
    faults = act(stack)

    def go() -> Iterator[str]:
        faults.heal_host(host)
        yield f"healed {host}"
    run_action(go())


@app.command()
def slow(node: Annotated[str, typer.Argument(help="a node: db1, web1, lb1, ...")],
         delay: Annotated[str, typer.Option(help="added to every packet the node sends")] = "200ms",
         off: Annotated[bool, typer.Option("--off", help="Remove the delay.")] = False,
         stack: StackOption = "lab") -> None:
    """Delay a node's packets (tc netem; exit 2 where the kernel has no netem)."""
    faults = act(stack)
    delay_ms = parse_delay_ms(delay)

    def go() -> Iterator[str]:
        if off:
            faults.unslow_node(node)
            yield f"{node}: delay removed"
        else:
            faults.slow_node(node, delay_ms)
            yield f"{node}: +{delay_ms:g} ms on every packet; `mac-lab slow {node} --off` removes it"
    run_action(go())


@app.command()
def revive(targets: Annotated[list[str], typer.Argument(help="nodes and/or hosts")],
           stack: StackOption = "lab",
           timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 120) -> None:
    """Put nodes or hosts back (after kill, kill-host, stop-service, partition, slow); waits for health."""
    faults = act(stack)

    def go() -> Iterator[str]:
        hosts = [t for t in targets if t in faults.host_names()]
        nodes = [t for t in targets if t not in hosts]
        for node in nodes:  # every name checked before anything is done
            if node not in faults.node_names():
                raise UnknownTarget(_unknown_target_message(faults, node))
        for host in hosts:
            start = time.monotonic()
            revived = faults.revive_host(host, timeout)
            yield f"revived host {host} and {', '.join(revived)} in {time.monotonic() - start:.1f} s"
        if nodes:
            start = time.monotonic()
            faults.revive_nodes(nodes, timeout)
            yield f"revived {', '.join(nodes)} in {time.monotonic() - start:.1f} s (healthy)"

    run_action(go())


def _unknown_target_message(faults: Faults, name: str) -> str:
    return (f"unknown node or host {name!r}; known nodes: {', '.join(faults.node_names())}; "
            f"hosts: {', '.join(faults.host_names())}")


# ---- load and watch ---------------------------------------------------------------------------

def rate_line(elapsed: float, window: list[Outcome], total: int, failed: int, span: float) -> str:
    """One live line: the last window's requests/s, failures, p99, and the totals."""
    ok = sorted((o.done - o.sent) * 1000 for o in window if o.ok)
    p99 = ok[min(len(ok) - 1, int(len(ok) * 0.99))] if ok else float("nan")
    bad = sum(1 for o in window if not o.ok)
    return (f"{elapsed:6.1f} s  {len(window) / span:7.1f} req/s  failed {bad:3d}  p99 {p99:7.1f} ms"
            f"  | total {total} requests, {failed} failed")


@app.command()
def load(rate: Annotated[float, typer.Option(help="requests per second (open loop)")] = 50,
         duration: Annotated[float, typer.Option(help="seconds; 0 = until Ctrl-C")] = 0,
         path: Annotated[str, typer.Option(help="/index.php writes a row; /health.php only reads")]
         = "/index.php",
         stack: StackOption = "lab") -> None:
    """Drive load through the LB (the benchmarks' generator) with a live requests/s, failed, p99 line."""
    lab = running_lab(stack)
    if rate <= 0:
        fail("--rate must be positive", 2)
    seconds = duration if duration > 0 else 7 * 24 * 3600.0
    tty = sys.stdout.isatty()
    generator = Load(lab.url, rate, seconds, workers=min(64, max(4, int(rate / 10))), path=path,
                     check_token=path.startswith("/index.php"))
    seen = failed = 0
    try:
        with generator:
            while generator.elapsed() + INTERVAL_S <= seconds:
                time.sleep(INTERVAL_S)
                window = generator.outcomes_since(seen)
                seen += len(window)
                failed += sum(1 for o in window if not o.ok)
                line = rate_line(generator.elapsed(), window, seen, failed, INTERVAL_S)
                typer.echo(f"\r{line}" if tty else line, nl=not tty)
    except KeyboardInterrupt:
        generator.stop()
    report = generator.join()
    typer.echo(("\n" if tty else "") + json.dumps(report.summary()))
    if report.failed:
        raise typer.Exit(1)


def show(lab: Lab, console: Console, watch: bool, watchdog: Path | None, frame_count: int,
         reap: bool = False) -> None:
    """One table, or a live view refreshed every second (`frame_count` > 0: stop after that many)."""
    if not watch:
        console.print(render(collect(lab, watchdog)))
        return
    if not console.is_terminal:  # a pipe or a file: one table after another
        for count, snap in enumerate(frames(lab, INTERVAL_S, watchdog), 1):
            console.print(render(snap))
            if reap:
                daemons.reap()
            if count == frame_count:
                return
    with Live(console=console, auto_refresh=False) as live:
        for count, snap in enumerate(frames(lab, INTERVAL_S, watchdog), 1):
            live.update(render(snap), refresh=True)
            if reap:
                daemons.reap()
            if count == frame_count:
                return


def snapshot_json(snap: Snapshot) -> str:
    return json.dumps(asdict(snap))


@app.command()
def status(watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every second.")] = False,
           frames_: Annotated[int, typer.Option("--frames", help="With --watch: stop after N refreshes.")]
           = 0,
           json_: Annotated[bool, typer.Option("--json", help="One JSON object (per refresh).")] = False,
           watchdog_state: WatchdogOption = None, stack: StackOption = "lab") -> None:
    """Each node's link, health, Galera state and size, HAProxy backends, hosts, the watchdog."""
    lab = running_lab(stack)
    if json_:
        for count, snap in enumerate(frames(lab, INTERVAL_S, watchdog_state), 1):
            typer.echo(snapshot_json(snap))
            if not watch or count == frames_:
                return
    with contextlib.suppress(KeyboardInterrupt):
        show(lab, console(), watch, watchdog_state, frames_)


def main() -> None:
    app()
