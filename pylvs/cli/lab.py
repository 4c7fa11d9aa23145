"""``pylvs lab``: bring a network-namespace LVS lab up for people, list and remove labs.

    pylvs lab up nat -n 3 [--directors 2] [--name NAME]   # builds it and leaves it running
    pylvs lab list                                        # labs recorded in /run/pylvs-lab
    pylvs lab down NAME | --all

`up` prints the hosts, addresses and how to enter them (``ip netns exec NS bash``); the
lab's namespaces and the PIDs of the processes it started are recorded under
/run/pylvs-lab/NAME.json, and `down` removes exactly those.  Also runnable on its own:
``python -m pylvs.cli.lab up nat``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from pylvs.lab import state, topology, tunnel


def register(subparsers: argparse._SubParsersAction) -> None:
    lab = subparsers.add_parser(
        "lab", help="network-namespace LVS labs (nat, direct, tunnel)",
        description="Build the RHEL 5 guide's LVS topologies in network namespaces.")
    sub = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    up = sub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("kind", choices=topology.KINDS)
    up.add_argument("-n", "--real-servers", type=int, default=3, metavar="N",
                    help="number of real servers (default 3)")
    up.add_argument("--directors", type=int, choices=(1, 2), default=1)
    up.add_argument("--clients", type=int, default=1)
    up.add_argument("--name", help="lab name (2-12 lower-case letters/digits); default random")
    up.add_argument("--vip-on-director", action="store_true",
                    help="put the VIP (and the NAT router address) on dir1")
    up.add_argument("--tunnel", choices=tunnel.MODES, default=tunnel.MODE_AUTO,
                    help="tunnel kind: kernel ipip or the userspace decapsulator")
    up.add_argument("--json", action="store_true", help="print the lab as JSON")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove a lab (its namespaces and processes)")
    down.add_argument("name", nargs="?")
    down.add_argument("--all", action="store_true",
                      help="every persistent lab, and labs whose owner process died")
    down.set_defaults(func=cmd_down)

    ls = sub.add_parser("list", help="show the labs recorded in " + str(state.STATE_DIR))
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


def _need_root() -> str | None:
    if os.geteuid() != 0:
        return "pylvs lab: needs root (network namespaces)"
    return None


def cmd_up(args: argparse.Namespace) -> int:
    if err := _need_root():
        print(err, file=sys.stderr)
        return 1
    try:
        lab = topology.build_lab(
            args.kind, args.real_servers, args.directors, clients=args.clients,
            name=args.name, vip_on_director=args.vip_on_director,
            tunnel_mode=args.tunnel, persistent=True)
    except (ValueError, RuntimeError, OSError, TimeoutError) as exc:
        print(f"pylvs lab up: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # the half-built lab was already removed
        print("pylvs lab up: interrupted; nothing left behind", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(lab.to_dict(), indent=1))
    else:
        print(lab.describe())
        print(f"remove it with:  pylvs lab down {lab.name}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if err := _need_root():
        print(err, file=sys.stderr)
        return 1
    if bool(args.name) == bool(args.all):
        print("pylvs lab down: give a lab NAME or --all", file=sys.stderr)
        return 2
    if args.all:
        records = [r for r in state.read_all() if r.persistent or r.is_stale()]
    else:
        rec = state.read(args.name)
        if rec is None:
            print(f"pylvs lab down: no lab {args.name!r} (see pylvs lab list)", file=sys.stderr)
            return 1
        if not rec.persistent and rec.owner_alive():
            print(f"pylvs lab down: {args.name} belongs to running process {rec.owner_pid}; "
                  "it removes the lab itself", file=sys.stderr)
            return 1
        records = [rec]
    status = 0
    for rec in records:
        try:
            for warning in state.teardown(rec):
                print(f"warning: {warning}", file=sys.stderr)
            print(f"removed lab {rec.name}")
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"pylvs lab down {rec.name}: {exc}", file=sys.stderr)
            status = 1
    return status


def _status(rec: state.LabRecord) -> str:
    if rec.persistent:
        return "up"
    return f"owned by pid {rec.owner_pid}" if rec.owner_alive() else "stale (owner gone)"


def cmd_list(args: argparse.Namespace) -> int:
    records = state.read_all()
    if args.json:
        print(json.dumps([{"name": r.name, "kind": r.kind, "status": _status(r),
                           "created": r.created, "netns": r.netns,
                           "pids": [p.pid for p in r.processes]} for r in records], indent=1))
        return 0
    if not records:
        print("no labs")
        return 0
    print(f"{'name':12} {'kind':7} {'rs':>3} {'dirs':>4}  {'created':19}  status")
    for r in records:
        hosts = r.summary.get("hosts", {})
        n_rs = sum(1 for h in hosts.values() if h["role"] == topology.REAL_SERVER)
        n_dir = sum(1 for h in hosts.values() if h["role"] == topology.DIRECTOR)
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.created))
        print(f"{r.name:12} {r.kind:7} {n_rs:>3} {n_dir:>4}  {created}  {_status(r)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pylvs.cli.lab ACTION ...`` (the same as ``pylvs lab ACTION ...``)."""
    parser = argparse.ArgumentParser(prog="pylvs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lab", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
