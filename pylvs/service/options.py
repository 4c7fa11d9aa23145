"""The options every daemon role shares, and what they become: absolute paths, resolved
before anything forks or changes directory (a relative ``-c lvs.cf`` must name the same
file in the daemon as on the command line)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pylvs.config.model import DEFAULT_CONFIG_PATH
from pylvs.service.paths import RUN_ROOT, RuntimePaths


def add(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("-c", "--configfile", default=None, metavar="FILE",
                   help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    p.add_argument("-n", "--nodaemon", action="store_true",
                   help="stay in the foreground (as under systemd, Type=notify)")
    p.add_argument("--runtime-dir", metavar="DIR", default=None,
                   help=f"where the PID file, status file and control socket live (default {RUN_ROOT}, "
                        f"or {RUN_ROOT}/NETNS inside a namespace named by `ip netns`)")
    p.add_argument("--pidfile", metavar="PATH", default=None, help=f"PID file (default RUNTIME_DIR/{role}.pid)")
    p.add_argument("--logfile", metavar="PATH", default=None,
                   help="also log to this file (default: syslog where /dev/log exists; a daemon without it "
                        f"logs to /var/log/pylvs/{role}.log)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def absolute(path: str | None) -> str | None:
    return None if path is None else os.path.abspath(path)


def resolve(args: argparse.Namespace, role: str) -> RuntimePaths:
    """Make every path of ``args`` absolute in place; the role's runtime paths."""
    paths = RuntimePaths.resolve(args.runtime_dir)
    args.runtime_dir = str(paths.dir)
    args.configfile_given = args.configfile is not None  # `pylvs lvs` runs bare without one
    args.configfile = absolute(args.configfile or DEFAULT_CONFIG_PATH)
    args.pidfile = absolute(args.pidfile) or str(paths.pidfile(role))
    args.logfile = absolute(args.logfile)
    return paths


def pidfile(args: argparse.Namespace) -> Path:
    return Path(args.pidfile)
