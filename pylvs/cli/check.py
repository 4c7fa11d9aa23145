"""``pylvs check [-c FILE] [--dump]``: test an lvs.cf file, as ``keepalived -t`` does.

Needs no privileges: it reads the file and resolves names, nothing else.
"""

from __future__ import annotations

import argparse
import sys

from pylvs.config import diagnostics as dg
from pylvs.config.check import check_file
from pylvs.config.dump import UnrepresentableError, dump
from pylvs.config.model import DEFAULT_CONFIG_PATH

EPILOG = f"""\
Every diagnostic is printed to stderr as FILE:LINE: SEVERITY: MESSAGE.
Severities: error (pylvs refuses the file), adjusted (pylvs runs it with the change
stated, as pulse did), warning (runs as written; probably not what was meant).

exit status (keepalived's config-test codes):
  {dg.EXIT_OK}  valid: no errors (warnings may have been printed)
  {dg.EXIT_CONFIG_ERROR}  errors: the daemon would refuse to run (also: file missing,
     unreadable or empty)
  {dg.EXIT_CONFIG_ADJUSTED}  no errors, but adjustments: the daemon runs with changes it
     states (e.g. backup_active = 1 without backup runs as backup_active = 0)
  2  usage error
"""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "check",
        help="check an lvs.cf configuration file",
        description="Parse and check an lvs.cf file; print every problem with its line.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--configfile", default=DEFAULT_CONFIG_PATH, metavar="FILE",
                        help=f"configuration file (default: {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--dump", action="store_true",
                        help="print the normalised configuration to stdout when there is no "
                             "error (the 'is valid' line then goes to stderr)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="do not print the 'is valid' line")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: str = args.configfile
    result = check_file(path)
    for diagnostic in result.diagnostics:
        print(diagnostic, file=sys.stderr)
    code = result.exit_code
    if code == dg.EXIT_CONFIG_ERROR:
        errors = sum(1 for d in result.diagnostics if d.severity is dg.Severity.ERROR)
        print(f"Configuration file {path} is not valid: {errors} "
              f"error{'s' if errors != 1 else ''}", file=sys.stderr)
        return code
    if args.dump:
        try:
            sys.stdout.write(dump(result.config))
        except UnrepresentableError as exc:  # check() reports these; belt and braces
            print(f"{path}: error: {exc}", file=sys.stderr)
            return dg.EXIT_CONFIG_ERROR
    if not args.quiet:
        print(f"Configuration file {path} is valid", file=sys.stderr if args.dump else sys.stdout)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run `check` alone (used when pylvs.cli.main is not importable)."""
    parser = argparse.ArgumentParser(prog="pylvs")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
