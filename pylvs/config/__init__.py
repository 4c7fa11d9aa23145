"""lvs.cf: the Piranha configuration file, as a frozen model with located diagnostics.

    from pylvs.config import load, ConfigError
    config = load("/etc/sysconfig/ha/lvs.cf")   # raises ConfigError listing every error

parse.py reads text into a Config, check.py grades what the grammar accepts, dump.py
writes canonical text back (parse(dump(c)) == c), model.py holds the dataclasses and the
keyword table.  See docs/lvs.cf.md.
"""

from pylvs.config.check import CheckResult, adjusted, check_file, check_text, load
from pylvs.config.diagnostics import ConfigError, Diagnostic, Severity, exit_code
from pylvs.config.dump import UnrepresentableError, dump
from pylvs.config.model import (
    DEFAULT_CONFIG_PATH,
    KEYWORDS,
    SCHEDULERS,
    BoundAddress,
    Config,
    FailoverService,
    RealServer,
    VirtualServer,
)
from pylvs.config.parse import ParseResult, parse, parse_file

__all__ = [
    "DEFAULT_CONFIG_PATH", "KEYWORDS", "SCHEDULERS", "BoundAddress", "CheckResult", "Config",
    "ConfigError", "Diagnostic", "FailoverService", "ParseResult", "RealServer", "Severity",
    "UnrepresentableError", "VirtualServer", "adjusted", "check_file", "check_text",
    "dump", "exit_code", "load", "parse", "parse_file",
]
