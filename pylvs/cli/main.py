"""``pylvs``: the daemon and admin command.

Each sub-command lives in its own module under ``pylvs.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable
taking the parsed arguments and returning the exit code.  Only sub-commands
that work are registered.
"""

from __future__ import annotations

import argparse
import sys

from pylvs import __version__
from pylvs.cli import check, health, lab, lvs, pulse, send_arp, status, web

SUBCOMMANDS = (check, lab, lvs, pulse, health, status, send_arp, web)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pylvs",
        description="Linux Virtual Server (Piranha LVS) as a userspace data plane.",
    )
    parser.add_argument("--version", action="version", version=f"pylvs {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    subparsers.add_parser("ipvsadm", help="the ipvsadm command on the running director (pylvsadm; "
                                          "`pylvs ipvsadm -h` for its options)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["ipvsadm"]:  # `pylvs ipvsadm ...` is pylvsadm: ipvsadm's grammar, not argparse's
        from pylvs.ipvsadm.cli import main as pylvsadm

        return pylvsadm(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
