"""`python -m vmsite up|down|status`: the vm stack on this machine (`make vm`, `make vm-down`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from vmsite.lock import SiteBusy
from vmsite.project import PulumiFailed
from vmsite.site import Site, SiteError, stop_holder


class _Stop(Exception):
    """SIGTERM (`make vm-down` from another shell): tear down like Ctrl-C."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def up(stay: bool) -> int:
    site = Site()
    signal.signal(signal.SIGTERM, _on_term)
    try:
        started = time.monotonic()
        topology = site.up()
        healthy = site.wait_healthy()
        took = time.monotonic() - started
        print(f"site healthy {healthy:.0f} s after `pulumi up` returned; {took:.0f} s in all")
        print(site.watchdog("status").stdout)
        print(f"app: ip netns exec {site.netns} curl http://{topology.front_ip}/  "
              f"(logs and the working copy in {site.run.root})")
        if not stay:
            site.lock.release()
            return 0
        print("Ctrl-C (or `make vm-down` from another shell) destroys it")
        while True:
            time.sleep(3600)
    except SiteBusy as err:
        print(err, file=sys.stderr)
        return 2
    except (SiteError, PulumiFailed) as err:
        print(f"vm stack: {err}", file=sys.stderr)
        print(f"(logs: {site.run.logs}); tearing down", file=sys.stderr)
        _teardown(site)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("\nstopping: pulumi destroy, hosts stopped", file=sys.stderr)
        _teardown(site)
        return 0


def _teardown(site: Site) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave half of it
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if site.lock.held:
        site.down()


def down() -> int:
    if stop_holder():
        print("the running `make vm` tore its stack down")
    site = Site()
    try:
        site.lock.acquire()
    except SiteBusy as err:
        print(err, file=sys.stderr)
        return 2
    if site.run.load() is not None:
        site.down()
        print("vm stack removed")
    else:
        site.cleanup()
        site.lock.release()
    return 0


def status() -> int:
    site = Site()
    if site.run.load() is None or not site.run.stack_file.exists():
        print("no vm stack is running (`make vm` starts one)")
        return 1
    result = site.watchdog("status")
    print(result.stdout + result.stderr)
    return result.returncode


def drill(host: str | None) -> int:
    """The host drill on the running vm stack (`make drill`)."""
    from vmsite.drill import DrillError, host_drill, victim_host

    site = Site()
    if site.run.load() is None or not site.run.stack_file.exists():
        print("no vm stack is running (`make vm` starts one)", file=sys.stderr)
        return 1
    try:
        host = host or victim_host(site.topology())
        result = host_drill(site, host)
    except DrillError as err:
        print(f"drill: {err}", file=sys.stderr)
        return 1
    print(result.render())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmsite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="bring the vm stack up, wait until healthy, stay until Ctrl-C")
    p_up.add_argument("--no-stay", action="store_true",
                      help="return once healthy (the stack keeps running; `down` removes it)")
    sub.add_parser("down", help="destroy the vm stack, stop its daemons, remove the namespace")
    sub.add_parser("status", help="the watchdog's status table of the running vm stack")
    p_drill = sub.add_parser("drill", help="a host with a DB and a web node loses power under load; "
                             "the real watchdog brings the site back on the spare (timeline)")
    p_drill.add_argument("--host", default=None, help="the host to kill (default: one with db + web)")
    args = parser.parse_args(argv)
    if args.command == "drill":
        return drill(args.host)
    if args.command == "up":
        return up(stay=not args.no_stay)
    if args.command == "down":
        return down()
    return status()
