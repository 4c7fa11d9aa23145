"""One life cycle for every daemon role (``pylvs lvs``, ``pylvs pulse``):

root check → (daemonize) → logging → signals → ``start()`` → PID file → READY → ``run()``
→ PID file removed.  Whatever stops the start is logged with its reason, sent to systemd
and to the waiting parent, and becomes the exit code: 4 for configuration errors (as
``pylvs check``), 1 for everything else (another instance, a port in use, a kernel that
refuses).  ``start()`` cleans up after itself when it raises.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from pylvs.config import diagnostics as dg
from pylvs.service import daemon
from pylvs.service.lock import AlreadyRunning
from pylvs.service.logs import Logs
from pylvs.service.notify import NOTIFY_ENV, Notifier

EXIT_FAILURE = 1
EXIT_OK = 0


class Role(Protocol):
    notifier: Notifier

    def install_signals(self) -> None: ...
    def start(self) -> Any: ...  # False: nothing to do here (exit 0)
    def run(self) -> int: ...
    def summary(self) -> str: ...


def run_daemon(role: Role, args: argparse.Namespace, name: str, *, errors: tuple[type[BaseException], ...]) -> int:
    if os.geteuid() != 0:
        print(f"pylvs {name}: must run as root (it installs packet-filter rules and addresses)", file=sys.stderr)
        return EXIT_FAILURE
    ready_fd = None if args.nodaemon else daemon.daemonize(f"pylvs {name}")
    logs = Logs(name, verbose=args.verbose, foreground=args.nodaemon, logfile=args.logfile)
    log = logging.getLogger(f"pylvs.{name}")
    if hasattr(role, "logfile"):
        role.logfile = logs.logfile  # pulse hands its log file (or the fallback) to its director
    notifier = role.notifier = Notifier(ready_fd)
    for key in NOTIFY_ENV:  # sd_notify's unset_environment: no child (health program, director) inherits it
        os.environ.pop(key, None)
    role.install_signals()
    code, reason = EXIT_OK, ""
    try:
        started = role.start()
    except dg.ConfigError:
        code, reason = dg.EXIT_CONFIG_ERROR, f"{args.configfile} has errors: not started"
    except AlreadyRunning as exc:
        code, reason = EXIT_FAILURE, str(exc)
    except (*errors, OSError, RuntimeError) as exc:
        code, reason = EXIT_FAILURE, f"cannot start: {exc}"
    else:
        if started is False:  # e.g. a backup with backup_active = 0: nothing to run
            notifier.ready("nothing to do on this router")  # then exit 0: systemd sees a clean stop
            return EXIT_OK
    if code:
        log.error("%s", reason)
        notifier.failed(code, reason)
        return code
    pidfile = Path(args.pidfile)
    daemon.write_pidfile(pidfile)
    log.info("running (pid %d), logging to %s", os.getpid(), ", ".join(logs.destinations))
    notifier.ready(role.summary())
    if ready_fd is not None:
        logs.detach()
        daemon.detach_output()
    try:
        return role.run()
    finally:
        daemon.remove_pidfile(pidfile)
        with contextlib.suppress(OSError):  # a namespace's own directory goes when its last file does
            Path(args.runtime_dir).rmdir()
