"""``pylvs lvs -c FILE [--nodaemon] [--io ...]``: run the lvs role (``pylvs.director``).

As root, in the router's network namespace; one per namespace (a second start says who
runs and exits 1, touching nothing).  Without --nodaemon the command returns once the
director forwards, or with its error.  Exit status: 0 after SIGTERM/SIGINT, 4 when the
configuration has errors (as ``pylvs check``), 1 when the director cannot start or its
dataplane fails, 2 for usage errors.

The control socket (--control, root's, 0600) answers pylvsadm, `pylvs health force` and
the verbs of ``pylvs.control``.  With --web-group, a second socket (--web-control, mode
0660, owned by that group) offers `pylvs web` the verbs status, reload and server.state
alone.
"""

from __future__ import annotations

import argparse
import sys

from pylvs.service import options
from pylvs.service.run import EXIT_FAILURE, run_daemon


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("lvs", help="run the virtual services of lvs.cf (the lvs daemon)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    options.add(p, "lvs")
    p.add_argument("--queue", type=int, default=0, metavar="N",
                   help="NFQUEUE number (default 0); nfq-loop also binds N+workers for the classify pass "
                        "of NAT real servers' own traffic (docs/netctl.md)")
    add_director_options(p)
    p.add_argument("--status", default=None, metavar="PATH",
                   help="status file, JSON, rewritten every second (default RUNTIME_DIR/lvs.status.json)")
    p.add_argument("--control", default=None, metavar="PATH",
                   help="root's control socket, every verb: pylvsadm, `pylvs health force`, status, reload, "
                        "server.state (default RUNTIME_DIR/lvs.ctl)")
    add_web_group(p)
    p.add_argument("--web-control", default=None, metavar="PATH",
                   help="with --web-group: the web tool's control socket (default RUNTIME_DIR/lvs.web.ctl)")
    p.add_argument("--capacity", type=int, default=None, metavar="N",
                   help="connection table entries, a power of two (default 1048576)")
    p.add_argument("--bare", action="store_true",
                   help="run without lvs.cf: an empty table that pylvsadm configures, as kernel IPVS with "
                        "ipvsadm (also when no -c is given and the default file does not exist)")
    p.add_argument("--standby", action="store_true",
                   help="start standby, as `pylvs pulse` runs it: forward after SIGUSR1, stop after SIGUSR2")
    p.add_argument("--notify-fd", type=int, default=None, metavar="FD",
                   help="write the role reached (standby, active) as a line to this descriptor (pulse's pipe)")
    p.set_defaults(func=run)


def add_director_options(p: argparse.ArgumentParser) -> None:
    """The director's options that `pylvs pulse` takes too, and hands to its director."""
    from pylvs.director import IO_CHOICES, XDP_MODES

    p.add_argument("--io", choices=IO_CHOICES, default="auto",
                   help="packet I/O: nfq-loop (the whole loop in C), afxdp (the C loop on AF_XDP sockets fed "
                        "by an XDP program; no firewall marks), nfq-native (batched C I/O, engine called "
                        "from Python), nfqueue (netfilterqueue), afpacket (DR/TUN); auto = the fastest that "
                        "works here, named in the start-up log line")
    p.add_argument("--xdp-mode", choices=XDP_MODES, default="auto",
                   help="afxdp: attach the XDP program in the driver (native), generic (skb) mode, or "
                        "native where the driver has it (auto)")
    p.add_argument("--busy-poll", type=int, default=0, metavar="USEC",
                   help="afxdp: after each batch, look for packets again without sleeping for USEC "
                        "microseconds (lower latency, a core spinning while traffic flows; default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="forwarding threads, one shared connection table (default 1): nfq-loop, each on its "
                        "own NFQUEUE (--queue .. --queue+N-1, flows spread by --queue-balance); afxdp, each on "
                        "its share of the devices' receive queues (a device needs N of them)")
    p.add_argument("--fail-closed", action="store_true",
                   help="drop VIP traffic when pylvs cannot keep up or is not running "
                        "(default: fail open, the kernel accepts it)")
    p.add_argument("--metrics", default=None, metavar="ADDR:PORT",
                   help="serve Prometheus metrics here (off by default; docs/metrics.md)")
    # The kernel's sysctls of the same names (reference 7.6, 7.7), off by default as there.
    p.add_argument("--expire-nodest-conn", action="store_true",
                   help="a packet of a connection whose real server was removed expires the connection at "
                        "once, so the client's next try is scheduled anew (default: dropped until it times out)")
    p.add_argument("--expire-quiescent-template", action="store_true",
                   help="a persistence template whose real server has weight 0 is expired when a new "
                        "connection looks it up, so persistent clients leave a drained server (default: they stay)")
    # The defences against a full table (reference 7.7, docs/defense.md).
    g = p.add_argument_group("defences against a full connection table (the kernel's sysctls; modes: 0 off, "
                             "1 automatic, 2 automatic and engaged now, 3 always)")
    g.add_argument("--amemthresh", type=_count, default=1024, metavar="N",
                   help="the automatic modes engage while fewer than N table entries are free (default 1024)")
    g.add_argument("--am-droprate", type=_count, default=10, metavar="N",
                   help="--drop-packet 3 drops one new connection in N (default 10)")
    for name, what in (("drop-entry", "drop half-open (and long-idle, nearly silent) entries: 1/32 of the "
                                      "table a second, and one whenever a new connection finds the table full"),
                       ("drop-packet", "drop new connections at a rate that grows as the table fills"),
                       ("secure-tcp", "the stricter TCP state table, half-open entries expire after 10 s")):
        g.add_argument("--" + name, type=int, choices=range(4), default=0, metavar="MODE",
                       help=f"{what} (default 0)")


def defense_from_args(args: argparse.Namespace):
    """The Defense of the director options (argparse has checked each value)."""
    from pylvs.dataplane.defense import Defense

    return Defense(amemthresh=args.amemthresh, am_droprate=args.am_droprate, drop_entry=args.drop_entry,
                   drop_packet=args.drop_packet, secure_tcp=args.secure_tcp)  # fmt: skip


def _count(text: str) -> int:
    """A whole number, 0 or more (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is below 0")
    return value


def _group(text: str) -> int:
    from pylvs.control import group_id

    try:
        return group_id(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_web_group(p: argparse.ArgumentParser, verbs: str = "status, reload and server.state") -> None:
    p.add_argument("--web-group", type=_group, default=None, metavar="GROUP",
                   help="open a second control socket for `pylvs web`, mode 0660 and owned by this group "
                        f"(name or gid), offering only {verbs} (default: none)")


def run(args: argparse.Namespace) -> int:
    import os

    from pylvs.dataplane.forwarder import CONN_TABLE_CAPACITY
    from pylvs.director import Director, DirectorError

    paths = options.resolve(args, "lvs")
    # Bare: asked for, or no -c and no file at the default path (a -c that names a missing
    # file is an error, as always).
    bare = args.bare or (not args.configfile_given and not os.path.exists(args.configfile))
    args.status = options.absolute(args.status) or str(paths.status("lvs"))
    args.control = options.absolute(args.control) or str(paths.control("lvs"))
    args.web_control = options.absolute(args.web_control) or str(paths.web_control("lvs"))
    try:
        d = Director(None if bare else args.configfile, io=args.io, queue=args.queue, fail_open=not args.fail_closed,
                     status_path=args.status, control_path=args.control,
                     capacity=args.capacity or CONN_TABLE_CAPACITY, standby=args.standby,
                     notify_fd=args.notify_fd, workers=args.workers, xdp_mode=args.xdp_mode,
                     busy_poll_us=args.busy_poll, metrics=args.metrics, web_control_path=args.web_control,
                     web_group=args.web_group, expire_nodest_conn=args.expire_nodest_conn,
                     expire_quiescent_template=args.expire_quiescent_template,
                     defense=defense_from_args(args))  # fmt: skip
    except DirectorError as exc:
        print(f"pylvs lvs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return run_daemon(d, args, "lvs", errors=(DirectorError,))
