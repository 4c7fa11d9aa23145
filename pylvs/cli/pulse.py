"""``pylvs pulse -c FILE [--nodaemon] [--forceactive]``: run the pulse role (``pylvs.ha.pulse``).

As root, on each of the two routers, with the same lvs.cf; one per network namespace.
The router whose interface owns ``primary`` is the primary.  pulse runs the lvs director
as its child and decides when it forwards.  Without --nodaemon the command returns once
pulse runs (its director ready), or with its error.  Exit status: 0 after SIGTERM/SIGINT
(or on a backup router with backup_active = 0, which has nothing to do), 4 when the
configuration has errors, 1 when pulse cannot start, 2 for usage errors.

The control socket (--control, root's, 0600) answers status and reload.  With
--web-group, pulse opens a second one (--web-control, mode 0660, owned by that group)
offering the same two verbs to `pylvs web`, and its director opens its own web socket
(--lvs-web-control) with the verbs status, reload and server.state.
"""

from __future__ import annotations

import argparse

from pylvs.cli.lvs import add_director_options, add_web_group, defense_from_args
from pylvs.service import options
from pylvs.service.run import run_daemon


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("pulse", help="heartbeat and failover between two routers (the pulse daemon)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    options.add(p, "pulse")
    p.add_argument("--forceactive", action="store_true", help="start active (take the VIPs at once)")
    add_director_options(p)  # handed to its director
    p.add_argument("--status", default=None, metavar="PATH",
                   help="pulse's status file, JSON, rewritten every second (default RUNTIME_DIR/pulse.status.json)")
    p.add_argument("--lvs-status", default=None, metavar="PATH",
                   help="the director's status file (default RUNTIME_DIR/lvs.status.json)")
    p.add_argument("--lvs-control", default=None, metavar="PATH",
                   help="the director's control socket (default RUNTIME_DIR/lvs.ctl)")
    p.add_argument("--control", default=None, metavar="PATH",
                   help="pulse's control socket: status and reload (default RUNTIME_DIR/pulse.ctl)")
    add_web_group(p, "status and reload, and have its director open its own")
    p.add_argument("--web-control", default=None, metavar="PATH",
                   help="with --web-group: pulse's socket for the web tool (default RUNTIME_DIR/pulse.web.ctl)")
    p.add_argument("--lvs-web-control", default=None, metavar="PATH",
                   help="with --web-group: the director's socket for the web tool (default RUNTIME_DIR/lvs.web.ctl)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pylvs.ha.pulse import Pulse, PulseError

    paths = options.resolve(args, "pulse")
    args.status = options.absolute(args.status) or str(paths.status("pulse"))
    args.control = options.absolute(args.control) or str(paths.control("pulse"))
    args.web_control = options.absolute(args.web_control) or str(paths.web_control("pulse"))
    args.lvs_web_control = options.absolute(args.lvs_web_control) or str(paths.web_control("lvs"))
    p = Pulse(args.configfile, forceactive=args.forceactive, io=args.io, status_path=args.status,
              lvs_status=options.absolute(args.lvs_status), lvs_control=options.absolute(args.lvs_control),
              verbose=args.verbose, workers=args.workers, xdp_mode=args.xdp_mode, busy_poll_us=args.busy_poll,
              fail_closed=args.fail_closed, metrics=args.metrics, runtime_dir=args.runtime_dir,
              expire_nodest_conn=args.expire_nodest_conn, expire_quiescent_template=args.expire_quiescent_template,
              defense=defense_from_args(args),
              logfile=args.logfile, daemon=not args.nodaemon, control_path=args.control,
              web_control_path=args.web_control, web_group=args.web_group,
              lvs_web_control=args.lvs_web_control)  # fmt: skip
    return run_daemon(p, args, "pulse", errors=(PulseError,))
