"""The external sending program of a health check (lvs.cf ``send_program``).

Follows nanny 1.46 ``external_check``/``getExecOutput`` (reference section 4.2):

* the command line is split into words (here with ``shlex``, without a shell; nanny split
  on single spaces), and every word that is exactly ``%h`` or ``%p`` becomes the real
  server's address or port;
* the program runs with stdin and stderr on /dev/null and stdout on a pipe, at most
  ``timeout`` seconds (the virtual's ``timeout``); past that its whole process group is
  killed (it runs in its own session, so a shell script's children go too);
* an exit status other than 0, a signal, a failure to start or the time limit is a
  failure.  nanny 1.46 counted these as a *pass* when an ``expect`` string was set
  ("didn't get anything back"); pylvs fails them unless ``failed_program_passes`` asks
  for the old behaviour;
* otherwise the first 4095 bytes of its output, cut at the first NUL, minus the last byte
  (meant to be the trailing newline ``echo`` writes) must equal ``expect`` exactly; with
  no ``expect`` the check fails, as in nanny.

The functions here know nothing of lvs.cf: ``pylvs.health.probes`` builds the argv and
turns the outcome into a ``CheckResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import Sequence
from dataclasses import dataclass

HOST_TOKEN = "%h"  # nanny: a word that is exactly %h becomes the real server's IP
PORT_TOKEN = "%p"  # ... and %p its port
OUTPUT_MAX = 4095  # nanny reads once into char buf[4096], keeping room for the NUL
READ_CHUNK = 65536  # output past OUTPUT_MAX is read and dropped, so the program never blocks on a full pipe
DETAIL_MAX = 80  # characters of output quoted in a result's detail

# Outcome reasons (short texts, logged and shown in status views).
OK = "ok"
TIMEOUT = "timeout"
START_FAILURE = "program failure"  # could not be started (not found, not executable)
EXPECT_MISMATCH = "expect mismatch"
NO_EXPECT = "no expect string"


class ProgramLineError(ValueError):
    """A send_program line that cannot be split into words (e.g. an unclosed quote)."""


@dataclass(frozen=True)
class ProgramOutcome:
    """What one run of the program came to."""

    ok: bool
    reason: str  # OK, TIMEOUT, "program exit N", "program killed by signal N", ...
    detail: str = ""
    returncode: int | None = None  # None: killed at the limit or never started
    output: bytes = b""  # what was compared with expect (nanny's chopped output)


def program_argv(command: str, address: str, port: int) -> tuple[str, ...]:
    """The argv for ``send_program``: shell-like words, ``%h``/``%p`` words replaced.

    Only whole words are replaced, as nanny does (``--host=%h`` stays as written)."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ProgramLineError(f"send_program {command!r}: {exc}") from None
    if not words:
        raise ProgramLineError("send_program is empty")
    return tuple(address if w == HOST_TOKEN else str(port) if w == PORT_TOKEN else w for w in words)


def chop_output(raw: bytes) -> bytes:
    """nanny's reading of the output: one read of at most 4095 bytes, the last byte
    dropped unconditionally, the rest up to the first NUL (a C string)."""
    kept = raw[:OUTPUT_MAX][:-1]
    return kept.split(b"\0", 1)[0]


def judge_output(output: bytes, expect: bytes | None) -> tuple[bool, str]:
    """A program that exited 0: (passed, reason) for its chopped output."""
    if expect is None:
        return False, NO_EXPECT
    return (True, OK) if output == expect else (False, EXPECT_MISMATCH)


def exit_reason(returncode: int) -> str:
    """ "program exit 3" or "program killed by signal 9" (asyncio: negative = signal)."""
    if returncode < 0:
        return f"program killed by signal {-returncode}"
    return f"program exit {returncode}"


def _quote(data: bytes) -> str:
    text = repr(data)
    return text if len(text) <= DETAIL_MAX else text[:DETAIL_MAX] + "..."


async def _collect(stream: asyncio.StreamReader) -> bytes:
    """Everything the program writes until EOF, keeping the first OUTPUT_MAX + 1 bytes."""
    kept = bytearray()
    while chunk := await stream.read(READ_CHUNK):
        if len(kept) <= OUTPUT_MAX:
            kept += chunk[: OUTPUT_MAX + 1 - len(kept)]
    return bytes(kept)


def _kill_group(pid: int) -> None:
    """SIGKILL the program's process group (its own session: pgid == pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_program(argv: Sequence[str], *, timeout: float, expect: bytes | None,
                      failed_program_passes: bool = False) -> ProgramOutcome:
    """Run the program once and judge it (see the module docstring).

    Never leaves the program running: at the time limit, and when the calling task is
    cancelled, its process group is killed and the process reaped before returning."""
    quirk_pass = failed_program_passes and expect is not None

    def failed(reason: str, detail: str, returncode: int | None = None) -> ProgramOutcome:
        if quirk_pass:  # nanny 1.46: "didn't get anything back" counted as available
            return ProgramOutcome(True, OK, f"{reason} counted as a pass (failed_program_passes): {detail}",
                                  returncode)
        return ProgramOutcome(False, reason, detail, returncode)

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    except OSError as exc:
        return failed(START_FAILURE, f"{argv[0]}: {exc.strerror or exc}")
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            raw, returncode = await asyncio.gather(_collect(proc.stdout), proc.wait())
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return failed(TIMEOUT, f"{argv[0]} still running after {timeout:g} s: killed")
    except BaseException:  # cancelled: the program must not outlive its check
        _kill_group(proc.pid)
        with contextlib.suppress(BaseException):  # reap it (a second cancel only skips this)
            await asyncio.shield(proc.wait())
        raise
    if returncode != 0:
        return failed(exit_reason(returncode), f"{argv[0]} output {_quote(raw)}", returncode)
    output = chop_output(raw)
    ok, reason = judge_output(output, expect)
    detail = f"output {_quote(output)}" + ("" if ok or expect is None else f", expected {_quote(expect)}")
    return ProgramOutcome(ok, reason, detail, returncode, output)
