"""pylvs.health.program: the external sending program (reference 4.2, nanny
external_check), run for real with the small scripts in tests/health_programs/."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from pylvs.config import check_text
from pylvs.health import probes as pr
from pylvs.health import program as prog
from pylvs.health.probes import CheckResult, CheckSpec, run_check, spec_for

SCRIPTS = Path(__file__).resolve().parent.parent / "health_programs"
PRINT_WORD = str(SCRIPTS / "print_word.sh")
PRINT_ARGS = str(SCRIPTS / "print_args.sh")
EXIT_WITH = str(SCRIPTS / "exit_with.sh")
HANG = str(SCRIPTS / "hang.sh")
NO_NEWLINE = str(SCRIPTS / "no_newline.sh")
LIMIT = 2.0  # seconds a hanging program is given before it is killed (room to start a shell)
GONE_WAIT = 5.0  # seconds to wait for init to reap an orphaned grandchild


def _check(argv: tuple[str, ...], expect: bytes | None = b"OK", *, timeout: float = 5.0,
           quirk: bool = False) -> CheckResult:
    spec = CheckSpec(kind="program", address="10.0.0.11", port=80, timeout=timeout, expect=expect,
                     program=argv, failed_program_passes=quirk)
    return asyncio.run(run_check(spec))


# --- pure parts ----------------------------------------------------------------------------------


def test_argv_split_and_placeholders() -> None:
    assert prog.program_argv("/bin/chk %h %p", "10.0.0.1", 8080) == ("/bin/chk", "10.0.0.1", "8080")
    assert prog.program_argv("/bin/chk  -x   %p", "10.0.0.1", 53) == ("/bin/chk", "-x", "53")
    assert prog.program_argv("/bin/chk 'two words' %h", "10.0.0.1", 1) == ("/bin/chk", "two words", "10.0.0.1")
    assert prog.program_argv("/bin/chk host=%h %hx", "10.0.0.1", 1) == ("/bin/chk", "host=%h", "%hx")
    for bad in ("", "   ", "/bin/chk 'open"):
        with pytest.raises(prog.ProgramLineError):
            prog.program_argv(bad, "10.0.0.1", 1)


@pytest.mark.parametrize("raw, chopped", [
    (b"OK\n", b"OK"),
    (b"OK", b"O"),  # the last byte goes whatever it is
    (b"", b""),
    (b"\n", b""),
    (b"OK\nmore\n", b"OK\nmore"),
    (b"OK\0junk\n", b"OK"),  # a C string ends at NUL
    (b"x" * 5000, b"x" * 4094),  # one read of 4095 bytes, then the chop
])
def test_chop_output(raw: bytes, chopped: bytes) -> None:
    assert prog.chop_output(raw) == chopped


def test_judge_output() -> None:
    assert prog.judge_output(b"OK", b"OK") == (True, prog.OK)
    assert prog.judge_output(b"OK ", b"OK") == (False, prog.EXPECT_MISMATCH)  # exact equality
    assert prog.judge_output(b"OK", None) == (False, prog.NO_EXPECT)  # as nanny: no expect, no pass
    assert prog.exit_reason(3) == "program exit 3"
    assert prog.exit_reason(-9) == "program killed by signal 9"


# --- real programs ----------------------------------------------------------------------------------


def test_prints_the_word() -> None:
    r = _check((PRINT_WORD, "OK"))
    assert (r.ok, r.reason) == (True, pr.OK) and r.duration >= 0


def test_prints_another_word() -> None:
    r = _check((PRINT_WORD, "DOWN"))
    assert (r.ok, r.reason) == (False, pr.EXPECT_MISMATCH) and "DOWN" in r.detail


def test_output_without_newline_loses_its_last_character() -> None:
    assert _check((NO_NEWLINE,)).reason == pr.EXPECT_MISMATCH
    assert _check((NO_NEWLINE,), b"O").ok


def test_no_expect_fails_even_on_exit_0() -> None:
    assert _check((PRINT_WORD, "OK"), None).reason == prog.NO_EXPECT


def test_exit_non_zero_fails_with_its_status() -> None:
    r = _check((EXIT_WITH, "3"))
    assert (r.ok, r.reason) == (False, "program exit 3")


def test_nanny_quirk_only_when_asked() -> None:
    """nanny 1.46 passed a failed program when expect was set; pylvs fails it by default."""
    assert not _check((EXIT_WITH, "3")).ok
    r = _check((EXIT_WITH, "3"), quirk=True)
    assert r.ok and "failed_program_passes" in r.detail
    assert not _check((EXIT_WITH, "3"), None, quirk=True).ok  # no expect: a failure in nanny too
    assert _check((PRINT_WORD, "DOWN"), quirk=True).reason == pr.EXPECT_MISMATCH  # ran fine: compared


def test_missing_program_fails() -> None:
    r = _check((str(SCRIPTS / "no-such-program"),))
    assert (r.ok, r.reason) == (False, prog.START_FAILURE)


def test_placeholders_reach_the_program() -> None:
    text = ("serial_no = 1\nprimary = 10.0.0.1\nservice = lvs\nnetwork = nat\nnat_router = 10.0.0.254 eth1:1\n"
            f'virtual v {{\n active = 1\n address = 192.0.2.10 eth0:1\n port = 53\n protocol = udp\n'
            f' send_program = "{PRINT_ARGS} -h %h -p %p"\n expect = "-h 10.0.0.11 -p 5353"\n timeout = 5\n'
            " server a {\n  address = 10.0.0.11\n  active = 1\n  port = 5353\n }\n}\n")
    result = check_text(text)
    assert result.ok, result.diagnostics
    v = result.config.virtuals[0]
    spec = spec_for(result.config, v, v.servers[0])
    assert spec.kind == "program"
    r = asyncio.run(run_check(spec))
    assert (r.ok, r.reason) == (True, pr.OK), r.detail


def _pid_gone(pid: int) -> bool:
    """True when `pid` no longer exists (or is a zombie waiting for init)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + GONE_WAIT
    while time.monotonic() < deadline:
        if _pid_gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_hanging_program_is_killed_at_the_limit(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    r = _check((HANG, str(pidfile)), timeout=LIMIT)
    assert (r.ok, r.reason) == (False, pr.TIMEOUT) and "killed" in r.detail
    script_pid, child_pid = (int(x) for x in pidfile.read_text().split())
    with pytest.raises(ProcessLookupError):  # reaped by run_check: the PID is gone
        os.kill(script_pid, 0)
    assert _wait_gone(child_pid), f"the script's child {child_pid} survived the group kill"


def test_hanging_program_with_the_quirk_still_gets_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    r = _check((HANG, str(pidfile)), timeout=LIMIT, quirk=True)
    assert r.ok  # nanny 1.46 semantics, asked for
    script_pid, child_pid = (int(x) for x in pidfile.read_text().split())
    assert _wait_gone(script_pid) and _wait_gone(child_pid)


def test_cancelled_check_kills_the_program(tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    spec = CheckSpec(kind="program", address="10.0.0.11", port=80, timeout=60.0, expect=b"OK",
                     program=(HANG, str(pidfile)))

    async def cancel_soon() -> None:
        task = asyncio.create_task(run_check(spec))
        deadline = time.monotonic() + GONE_WAIT
        while not pidfile.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    script_pid, child_pid = (int(x) for x in pidfile.read_text().split())
    assert _wait_gone(script_pid) and _wait_gone(child_pid)
