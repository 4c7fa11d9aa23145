"""``pylvs pulse -c FILE [--nodaemon] [--forceactive]``: run the pulse role (``pylvs.ha.pulse``).

As root, on each of the two routers, with the same lvs.cf.  The router whose interface
owns ``primary`` is the primary.  pulse runs the lvs director as its child and decides
when it forwards.  Exit status: 0 after SIGTERM/SIGINT (or on a backup router with
backup_active = 0, which has nothing to do), 4 when the configuration has errors, 1 when
pulse cannot start, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pylvs.config import diagnostics as dg
from pylvs.config.model import DEFAULT_CONFIG_PATH

DEFAULT_STATUS = "/run/pylvs/pulse.status.json"
DEFAULT_PIDFILE = "/run/pylvs/pulse.pid"
EXIT_FAILURE = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from pylvs.director import IO_CHOICES, XDP_MODES

    p = subparsers.add_parser("pulse", help="heartbeat and failover between two routers (the pulse daemon)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-c", "--configfile", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                   help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    p.add_argument("-n", "--nodaemon", action="store_true", help="stay in the foreground")
    p.add_argument("--forceactive", action="store_true", help="start active (take the VIPs at once)")
    p.add_argument("--io", choices=IO_CHOICES, default="auto", help="the director's packet I/O (see pylvs lvs)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="the director's forwarding threads "
                                                                       "(see pylvs lvs)")
    p.add_argument("--xdp-mode", choices=XDP_MODES, default="auto", help="--io afxdp: the XDP mode (see pylvs lvs)")
    p.add_argument("--busy-poll", type=int, default=0, metavar="USEC",
                   help="--io afxdp: the director's busy polling (see pylvs lvs)")
    p.add_argument("--status", default=DEFAULT_STATUS, metavar="PATH",
                   help=f"pulse's status file, JSON, rewritten every second (default {DEFAULT_STATUS})")
    p.add_argument("--lvs-status", default=None, metavar="PATH", help="the director's status file")
    p.add_argument("--lvs-control", default=None, metavar="PATH", help="the director's control socket")
    p.add_argument("--pidfile", default=DEFAULT_PIDFILE, metavar="PATH", help="PID file when daemonized")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pylvs.cli.lvs import daemonize, setup_logging
    from pylvs.ha.pulse import Pulse, PulseError

    if os.geteuid() != 0:
        print("pylvs pulse: must run as root (it binds the heartbeat port and takes addresses)", file=sys.stderr)
        return EXIT_FAILURE
    setup_logging(args.verbose, foreground=args.nodaemon, ident="pulse")
    log = logging.getLogger("pylvs.pulse")
    p = Pulse(args.configfile, forceactive=args.forceactive, io=args.io, status_path=args.status,
              lvs_status=args.lvs_status, lvs_control=args.lvs_control, verbose=args.verbose,
              workers=args.workers, xdp_mode=args.xdp_mode,
              busy_poll_us=args.busy_poll)  # fmt: skip
    if not args.nodaemon:
        daemonize(args.pidfile)
    p.install_signals()
    try:
        if not p.start():
            p.stop()
            return 0
    except dg.ConfigError:
        log.error("%s has errors: not started", args.configfile)
        p.stop()
        return dg.EXIT_CONFIG_ERROR
    except (PulseError, OSError) as exc:
        log.error("cannot start: %s", exc)
        p.stop()
        return EXIT_FAILURE
    try:
        return p.run()
    finally:
        if not args.nodaemon:
            Path(args.pidfile).unlink(missing_ok=True)
