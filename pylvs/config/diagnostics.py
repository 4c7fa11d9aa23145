"""Located, graded configuration diagnostics and the config-test exit codes."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

# Exit codes of `pylvs check`, keepalived's config-test codes (anchors B3,
# keepalived lib/scheduler.h KEEPALIVED_EXIT_*).
EXIT_OK = 0  # no error (warnings may have been printed)
EXIT_CONFIG_ERROR = 4  # "cannot run": at least one error
EXIT_CONFIG_ADJUSTED = 5  # "errors it would run with anyway": the daemon changes what the file says


class Severity(enum.Enum):
    """How bad a diagnostic is, ordered from worst."""

    ERROR = "error"  # pylvs refuses to run this file
    ADJUSTED = "adjusted"  # pylvs runs, but not as written (it says how); as pulse does
    WARNING = "warning"  # runs exactly as written, but is probably not what was meant


# Original piranha parser messages (lvsconfig.c lvsStrerror, reference 1.1).  pylvs may
# append context after them, never change them.
EMPTY_CONFIGURATION = "Empty configuration"
IO_ERROR = "I/O error while reading configuration"
QUOTATION_MISMATCH = "quotation mismatch"
UNEXPECTED_EOF = "unexpected end of file"
UNEXPECTED_ARGUMENTS = "unexpected arguments"
EQUAL_EXPECTED = "equal (=) expected after command"
MISSING_ARGUMENTS = "missing arguments"
BAD_HOSTNAME = "invalid host name or ip address"
BAD_ARGUMENT = "invalid argument"
INT_EXPECTED = "integer expected"
BOOL_EXPECTED = "boolean expected"
UNKNOWN_COMMAND = "unknown command"
LIST_EXPECTED = "list expected"
ONLY_ONE_SERVICE = "Cannot use both virtual AND failover services"
BAD_NETMASK = "Bad subnet mask specified"

PARSER_MESSAGES = (
    EMPTY_CONFIGURATION, IO_ERROR, QUOTATION_MISMATCH, UNEXPECTED_EOF, UNEXPECTED_ARGUMENTS,
    EQUAL_EXPECTED, MISSING_ARGUMENTS, BAD_HOSTNAME, BAD_ARGUMENT, INT_EXPECTED,
    BOOL_EXPECTED, UNKNOWN_COMMAND, LIST_EXPECTED, ONLY_ONE_SERVICE, BAD_NETMASK,
)


@dataclass(frozen=True)
class Diagnostic:
    """One finding, located at file:line (line 0: the file as a whole)."""

    file: str
    line: int
    severity: Severity
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line > 0 else self.file
        return f"{where}: {self.severity.value}: {self.message}"


class ConfigError(Exception):
    """A configuration with at least one error; carries every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.severity is Severity.ERROR]
        head = str(errors[0]) if errors else "invalid configuration"
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(head + more)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diagnostics)


def exit_code(diagnostics: Iterable[Diagnostic]) -> int:
    """keepalived's config-test code for a set of diagnostics."""
    severities = {d.severity for d in diagnostics}
    if Severity.ERROR in severities:
        return EXIT_CONFIG_ERROR
    if Severity.ADJUSTED in severities:
        return EXIT_CONFIG_ADJUSTED
    return EXIT_OK


def sort_key(d: Diagnostic) -> tuple[str, int]:
    return (d.file, d.line)
