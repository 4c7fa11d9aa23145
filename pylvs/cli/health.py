"""``pylvs health force RIP[:PORT] up|down|auto``: force a real server's health state in a
running director, as nanny's SIGUSR2 / SIGUSR1 / SIGHUP did per server (reference 4.7).

``up`` keeps the server in whatever its checks say (slow start still applies), ``down``
takes it out, ``auto`` hands it back to its checks.  Without a port, every service's
check of that address.  Exit 0 when the director did it, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

from pylvs.control import FORCE_STATES, request
from pylvs.service.paths import RuntimePaths


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("health", help="act on a running director's health checks",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="health_cmd", metavar="ACTION", required=True)
    f = sub.add_parser("force", help="force a real server up, down, or back to its checks (auto)")
    f.add_argument("server", metavar="RIP[:PORT]")
    f.add_argument("state", choices=sorted(FORCE_STATES))
    f.add_argument("--control", default=None, metavar="PATH",
                   help="the director's control socket (default RUNTIME_DIR/lvs.ctl)")
    f.add_argument("--runtime-dir", default=None, metavar="DIR",
                   help="the director's runtime directory (default /run/pylvs, or /run/pylvs/NETNS in a "
                        "namespace named by `ip netns`)")
    f.set_defaults(func=run_force)


def run_force(args: argparse.Namespace) -> int:
    args.control = args.control or str(RuntimePaths.resolve(args.runtime_dir).control("lvs"))
    addr, _, port = args.server.partition(":")
    if port and not port.isdigit():
        print(f"pylvs health force: bad port in {args.server!r}", file=sys.stderr)
        return 2
    try:
        reply = request(args.control, {"cmd": "force", "address": addr, "port": int(port) if port else None,
                                       "state": args.state})  # fmt: skip
    except OSError as exc:
        print(f"pylvs health force: no director at {args.control}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"pylvs health force: {reply.get('error', reply)}", file=sys.stderr)
        return 1
    print(f"{args.server}: forced {args.state} ({reply['checks']} check(s))")
    return 0
