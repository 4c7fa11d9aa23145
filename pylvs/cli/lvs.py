"""``pylvs lvs -c FILE [--nodaemon] [--io ...]``: run the lvs role (``pylvs.director``).

As root, in the router's network namespace.  Exit status: 0 after SIGTERM/SIGINT,
4 when the configuration has errors (as ``pylvs check``), 1 when the director cannot
start or its dataplane fails, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from pathlib import Path

from pylvs.config import diagnostics as dg
from pylvs.config.model import DEFAULT_CONFIG_PATH
from pylvs.control import DEFAULT_CONTROL

DEFAULT_STATUS = "/run/pylvs/lvs.status.json"
DEFAULT_PIDFILE = "/run/pylvs/lvs.pid"
SYSLOG_SOCKET = "/dev/log"
EXIT_FAILURE = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from pylvs.director import IO_CHOICES, XDP_MODES

    p = subparsers.add_parser("lvs", help="run the virtual services of lvs.cf (the lvs daemon)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-c", "--configfile", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                   help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    p.add_argument("--nodaemon", action="store_true", help="stay in the foreground")
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
    p.add_argument("--queue", type=int, default=0, metavar="N", help="NFQUEUE number (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="forwarding threads, each on its own NFQUEUE (--queue .. --queue+N-1, flows spread "
                        "by --queue-balance), one shared connection table (nfq-loop; default 1)")
    p.add_argument("--fail-closed", action="store_true",
                   help="drop VIP traffic when pylvs cannot keep up or is not running "
                        "(default: fail open, the kernel accepts it)")
    p.add_argument("--status", default=DEFAULT_STATUS, metavar="PATH",
                   help=f"status file, JSON, rewritten every second (default {DEFAULT_STATUS})")
    p.add_argument("--control", default=DEFAULT_CONTROL, metavar="PATH",
                   help=f"control socket for `pylvs health force` (default {DEFAULT_CONTROL})")
    p.add_argument("--pidfile", default=DEFAULT_PIDFILE, metavar="PATH", help="PID file when daemonized")
    p.add_argument("--capacity", type=int, default=None, metavar="N",
                   help="connection table entries, a power of two (default 1048576)")
    p.add_argument("--standby", action="store_true",
                   help="start standby, as `pylvs pulse` runs it: forward after SIGUSR1, stop after SIGUSR2")
    p.add_argument("--notify-fd", type=int, default=None, metavar="FD",
                   help="write the role reached (standby, active) as a line to this descriptor (pulse's pipe)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def setup_logging(verbose: bool, foreground: bool, ident: str = "lvs") -> None:
    root = logging.getLogger("pylvs")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if foreground:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(f"%(asctime)s {ident}[%(process)d]: %(message)s"))
        root.addHandler(h)
    if os.path.exists(SYSLOG_SOCKET):
        s = logging.handlers.SysLogHandler(SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        s.setFormatter(logging.Formatter(f"{ident}[%(process)d]: %(message)s"))
        root.addHandler(s)


def daemonize(pidfile: str) -> None:
    """Classic double fork; the PID file names the daemon."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    fd = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(fd, n)
    Path(pidfile).parent.mkdir(parents=True, exist_ok=True)
    Path(pidfile).write_text(f"{os.getpid()}\n")


def run(args: argparse.Namespace) -> int:
    from pylvs.dataplane.forwarder import CONN_TABLE_CAPACITY
    from pylvs.director import Director, DirectorError

    if os.geteuid() != 0:
        print("pylvs lvs: must run as root (it installs packet-filter rules and addresses)", file=sys.stderr)
        return EXIT_FAILURE
    setup_logging(args.verbose, foreground=args.nodaemon)
    d = Director(args.configfile, io=args.io, queue=args.queue, fail_open=not args.fail_closed,
                 status_path=args.status, control_path=args.control,
                 capacity=args.capacity or CONN_TABLE_CAPACITY, standby=args.standby,
                 notify_fd=args.notify_fd, workers=args.workers, xdp_mode=args.xdp_mode,
                 busy_poll_us=args.busy_poll)  # fmt: skip
    if not args.nodaemon:
        daemonize(args.pidfile)
    d.install_signals()
    try:
        d.start()
    except dg.ConfigError:
        logging.getLogger("pylvs.lvs").error("%s has errors: not started", args.configfile)
        return dg.EXIT_CONFIG_ERROR
    except (DirectorError, OSError, RuntimeError) as exc:
        logging.getLogger("pylvs.lvs").error("cannot start: %s", exc)
        return EXIT_FAILURE
    try:
        return d.run()
    finally:
        if not args.nodaemon:
            Path(args.pidfile).unlink(missing_ok=True)
