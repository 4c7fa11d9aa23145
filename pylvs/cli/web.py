"""``pylvs web``: the configuration tool (Piranha's piranha-gui on port 3636), and
``pylvs passwd``: its password (piranha-passwd).

``pylvs web`` serves the panels of the RHEL 5 guide's chapter 4 on 127.0.0.1:3636 unless
told otherwise, as its own unprivileged user, and reaches the director and pulse only
through their web control sockets (``pylvs lvs|pulse --web-group``).  docs/web.md says how
to run it as a service.  Exit status: 0 after SIGTERM/SIGINT, 1 when it cannot start,
2 for usage errors.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import pwd
import sys

from pylvs.config.model import DEFAULT_CONFIG_PATH
from pylvs.service.paths import RuntimePaths
from pylvs.web import auth

EXIT_OK, EXIT_FAILURE = 0, 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from pylvs.web.server import DEFAULT_LISTEN, DEFAULT_USER

    p = subparsers.add_parser("web", help="the web configuration tool (Piranha's panels, port 3636)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("-c", "--configfile", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                   help=f"the lvs.cf it edits (default {DEFAULT_CONFIG_PATH})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                   help=f"where it serves (default {DEFAULT_LISTEN}: this box only)")
    p.add_argument("--passwd", default=auth.DEFAULT_PASSWD, metavar="FILE",
                   help=f"the password file `pylvs passwd` writes (default {auth.DEFAULT_PASSWD})")
    p.add_argument("--user", default=DEFAULT_USER, help=f"run as this user once bound (default {DEFAULT_USER})")
    p.add_argument("--group", default=None, help="and this primary group (default the user's)")
    p.add_argument("--allow", default=None, metavar="NET[,NET...]",
                   help="only these client addresses or networks may connect (the guide's section 2.4); "
                        "default: any that reaches --listen")
    p.add_argument("--server-name", action="append", default=[], metavar="NAME",
                   help="a host name the tool is browsed by (repeatable); IP addresses and localhost are always "
                        "accepted, other Host headers refused (no DNS rebinding)")
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="serve HTTPS with this certificate")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="and this key (read before dropping root)")
    p.add_argument("--runtime-dir", default=None, metavar="DIR",
                   help="where the daemons' sockets are (default /run/pylvs, or /run/pylvs/NETNS)")
    p.add_argument("--director-control", default=None, metavar="PATH",
                   help="the director's web socket (default RUNTIME_DIR/lvs.web.ctl)")
    p.add_argument("--pulse-control", default=None, metavar="PATH",
                   help="pulse's web socket (default RUNTIME_DIR/pulse.web.ctl; none there: a director alone)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run_web)

    q = subparsers.add_parser("passwd", help="set the web tool's password (piranha-passwd)",
                              description="Set the password of the web configuration tool: prompts twice, or takes "
                                          "it as an argument (visible to other users in ps: prefer the prompt).")
    q.add_argument("password", nargs="?", default=None)
    q.add_argument("-f", "--file", default=auth.DEFAULT_PASSWD, help=f"password file (default {auth.DEFAULT_PASSWD})")
    q.add_argument("--login", default=auth.DEFAULT_LOGIN, help=f"the user name to log in with (default "
                                                               f"{auth.DEFAULT_LOGIN})")
    q.add_argument("--owner", default=None,
                   help=f"owner of the file, the user `pylvs web` runs as (default {DEFAULT_USER} when it exists)")
    q.set_defaults(func=run_passwd)


def run_web(args: argparse.Namespace) -> int:
    from pylvs.web.app import Settings, networks
    from pylvs.web.server import WebError, serve

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s pylvs web: %(levelname)s %(message)s")  # fmt: skip
    if bool(args.tls_cert) != bool(args.tls_key):
        print("pylvs web: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    paths = RuntimePaths.resolve(args.runtime_dir)
    try:
        settings = Settings(
            lvs_cf=os.path.abspath(args.configfile), passwd=os.path.abspath(args.passwd),
            director=os.path.abspath(args.director_control or paths.web_control("lvs")),
            pulse=os.path.abspath(args.pulse_control or paths.web_control("pulse")),
            allow=networks(args.allow),
            server_names=("localhost", *(n.lower() for n in args.server_name)))  # fmt: skip
        return serve(settings, args.listen, user=args.user, group=args.group, certfile=args.tls_cert,
                     keyfile=args.tls_key)  # fmt: skip
    except (WebError, ValueError) as exc:
        logging.getLogger("pylvs.web").error("%s", exc)
        print(f"pylvs web: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def run_passwd(args: argparse.Namespace) -> int:
    from pylvs.web.server import DEFAULT_USER

    password = args.password
    if password is None:
        try:
            password = getpass.getpass("New password: ")
            again = getpass.getpass("Retype new password: ")
        except (EOFError, KeyboardInterrupt):
            print("pylvs passwd: no password given; nothing changed", file=sys.stderr)
            return EXIT_FAILURE
        if password != again:
            print("pylvs passwd: the passwords differ; nothing changed", file=sys.stderr)
            return EXIT_FAILURE
    owner = None
    name = args.owner or DEFAULT_USER
    try:
        pw = pwd.getpwnam(name)
        owner = (pw.pw_uid, pw.pw_gid)
    except KeyError:
        if args.owner:
            print(f"pylvs passwd: --owner {name}: no such user; nothing changed", file=sys.stderr)
            return EXIT_FAILURE
    if owner is not None and os.geteuid() != 0 and owner[0] != os.geteuid():
        owner = None  # only root gives files away; the file stays the caller's
    try:
        auth.write_password(args.file, password, args.login, owner)
    except (auth.PasswordError, OSError) as exc:
        print(f"pylvs passwd: {exc}; nothing changed", file=sys.stderr)
        return EXIT_FAILURE
    print(f"pylvs passwd: password of {args.login} set in {args.file}")
    return EXIT_OK
