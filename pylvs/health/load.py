"""Load monitoring (nanny -U, reference 4.1 and 4.6): the real server's 1-minute load average.

lvs.cf ``load_monitor``:
* ``uptime``  -> ``RSH_COMMAND RIP uptime`` (``rsh_command`` is ``rsh`` or ``ssh``);
* ``rup``, ``ruptime`` -> ``rup RIP`` / ``ruptime RIP``, only when the tool is installed;
* ``none`` or unset -> no load monitoring;
* anything else -> ``CMD RIP`` (nanny passes the value verbatim).

    argv = load_argv(config, virtual, "10.0.0.2")   # None: no load monitoring
    load = await sample_load(argv, timeout=10)       # float, or None on any failure

The parser is nanny's (``parse_load``): find ``load``, then the next ``:``, skip two
characters, read digits and dots, which must be followed by ``,`` or a space.  ruptime
prints ``load 0.12, ...`` without a colon, which nanny's parser rejects; ``parse_load``
falls back to that form so ``ruptime`` works (an extension, said in docs/health.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import shutil

log = logging.getLogger("pylvs.health")

NO_LOAD = (None, "", "none")  # load_monitor values meaning "no load monitoring" (reference 1.3)
LOAD_OUTPUT_MAX = 4096  # read at most this much of the command's output
SKIP_AFTER_COLON = 2  # nanny skips the colon and the space after "load ...:"
_NUMBER = re.compile(rb"[0-9.]+")
_RUPTIME = re.compile(rb"\bload\s+([0-9.]+)[, ]")
_warned: set[str] = set()


def parse_load(text: bytes | str) -> float | None:
    """The 1-minute load average from uptime/rup(/ruptime) output, None when it is not there."""
    data = text.encode() if isinstance(text, str) else text
    i = data.find(b"load")
    if i >= 0:
        j = data.find(b":", i)
        if j >= 0:
            m = _NUMBER.match(data, j + SKIP_AFTER_COLON)  # from the colon: skip ": "
            if m and data[m.end():m.end() + 1] in (b",", b" "):
                with contextlib.suppress(ValueError):
                    return float(m.group())
    m = _RUPTIME.search(data)  # ruptime: "load 0.12, 0.08, 0.05" (no colon)
    if m:
        with contextlib.suppress(ValueError):
            return float(m.group(1))
    return None


def load_argv(config, virtual, host: str, *, which=shutil.which) -> list[str] | None:
    """The load command for one real server as nanny runs it, None for no load monitoring
    (also when ``rup``/``ruptime`` is asked for but not installed: logged once)."""
    lm = virtual.load_monitor
    if lm in NO_LOAD:
        return None
    if lm == "uptime":
        return [*shlex.split(config.rsh_command), host, "uptime"]
    cmd = shlex.split(lm)
    if not cmd:
        return None
    if which(cmd[0]) is None:
        if cmd[0] not in _warned:
            _warned.add(cmd[0])
            log.warning("load_monitor %r: %s is not installed; no load monitoring for virtual %s",
                        lm, cmd[0], virtual.name)
        return None
    return [*cmd, host]


async def sample_load(argv: list[str], timeout: float) -> float | None:
    """Run ``argv`` (no shell, stdin and stderr closed) for at most ``timeout`` seconds and
    parse its output; None on a timeout, a non-zero exit or output without a load average."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
    except OSError as exc:
        log.debug("load command %s failed to start: %s", argv, exc)
        return None
    try:
        async with asyncio.timeout(timeout):
            out = await proc.stdout.read(LOAD_OUTPUT_MAX)
            rc = await proc.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    return parse_load(out) if rc == 0 else None
