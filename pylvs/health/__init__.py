"""Health checks: the nanny role (reference section 4; docs/health.md).

probes.py: one check of one real server (TCP/UDP send/expect, the default HTTP probe,
escapes, POSIX regex expect) and ``spec_for`` from the lvs.cf model; program.py: the
external ``send_program``.
"""

from pylvs.health.probes import CheckResult, CheckSpec, apply_escapes, match_reply, run_check, spec_for
from pylvs.health.program import ProgramOutcome, program_argv, run_program

__all__ = [
    "CheckResult", "CheckSpec", "ProgramOutcome", "apply_escapes", "match_reply", "program_argv",
    "run_check", "run_program", "spec_for",
]
