"""One health check of one real server, as nanny 1.46 makes it (reference section 4.2).

    spec = spec_for(config, virtual, server)          # pure: from the checked lvs.cf model
    result = await run_check(spec)                    # CheckResult(ok, reason, duration, detail)

Kinds:

* ``tcp``: connect to RIP:RPORT; write ``send`` if set; with ``expect``, make **one**
  read and match it (below); with neither, a completed connect passes.
* ``udp``: connect a UDP socket, send ``send`` if set, then always wait for one datagram:
  with no ``expect`` any datagram passes (nanny 1.46 crashed there); an ICMP port
  unreachable (ECONNREFUSED on the connected socket) fails.
* ``program``: the external ``send_program`` (``pylvs.health.program``).

The default HTTP probe: a virtual on port 80 with none of send, expect, send_program gets
send ``GET / HTTP/1.0\\r\\n\\r\\n`` and expect ``HTTP``.

Matching one read (nanny ``pinger``): ``expect = *`` passes on any reply; plain mode: the
first ``len(expect)`` bytes of the read must equal ``expect`` (a prefix match; a shorter
read fails: no second read is made); ``use_regex = 1``: a POSIX extended regular
expression searched in the read (at most 254 bytes, up to the first NUL), translated to
Python ``re`` by ``posix_ere``.  Escapes (section 4.3) are applied to send and expect.

Differences from nanny, on purpose (docs/health.md): the whole probe (connect, send,
read) is bounded by ``timeout`` once, not ``timeout`` per phase; the informational ICMP
echo nanny sent first is not sent; a TCP peer that closes without sending a byte fails
``*`` (nanny let it pass); a regex that does not compile makes every check fail with the
reason "bad check" (nanny logged it and failed every check too).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pylvs.config.model import Config, RealServer, VirtualServer
from pylvs.health import program as prog

KIND_TCP, KIND_UDP, KIND_PROGRAM = "tcp", "udp", "program"
KINDS = (KIND_TCP, KIND_UDP, KIND_PROGRAM)

# nanny's default probe for a virtual on port 80 with nothing configured (nanny.c
# http_send_str / http_recv_str).
HTTP_PORT = 80
HTTP_SEND = b"GET / HTTP/1.0\r\n\r\n"
HTTP_EXPECT = b"HTTP"

WILDCARD = b"*"  # expect = * : any reply
READ_MAX = 254  # nanny reads into char read_buf[255], keeping room for the NUL
DETAIL_MAX = 80  # characters of a reply quoted in a result's detail

# The escapes of send/expect (nanny convert_str, reference 4.3).  Any other backslash
# pair is kept as written; strings of one character are not processed.
ESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t", "'": "'", '"': '"'}

# Reasons (short texts; the monitor logs them, status views show them).
OK = "ok"
TIMEOUT = prog.TIMEOUT
CONNECTION_REFUSED = "connection refused"
PORT_UNREACHABLE = "icmp port unreachable"
HOST_UNREACHABLE = "host unreachable"
CONNECTION_RESET = "connection reset"
CONNECTION_FAILURE = "connection failure"
SEND_FAILURE = "send failure"
READ_FAILURE = "read failure"
CONNECTION_CLOSED = "connection closed"  # TCP EOF before the first byte of a reply
REPLY_TOO_SHORT = "reply too short"
EXPECT_MISMATCH = prog.EXPECT_MISMATCH
BAD_CHECK = "bad check"  # the spec can never pass (bad regex, bad send_program line)

_UNREACHABLE_ERRNOS = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN)
_RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
_PHASE_FAILURE = {"connect": CONNECTION_FAILURE, "send": SEND_FAILURE, "read": READ_FAILURE}


@dataclass(frozen=True)
class CheckSpec:
    """What to check for one (virtual, real server): everything run_check needs."""

    kind: str  # KIND_TCP | KIND_UDP | KIND_PROGRAM
    address: str  # the real server's IP (dotted quad)
    port: int  # the real server's port (the server's `port`, else the virtual's)
    timeout: float  # the virtual's `timeout`: the probe's time limit (and the interval)
    send: bytes | None = None  # escapes applied; None: send nothing
    expect: bytes | None = None  # escapes applied; b"*": any reply; None: read nothing (tcp)
    use_regex: bool = False  # expect is a POSIX extended regex
    program: tuple[str, ...] | None = None  # send_program argv, %h/%p replaced
    failed_program_passes: bool = False  # nanny 1.46's quirk (see pylvs.health.program)
    problem: str | None = None  # set: the check can never pass; run_check says why


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    ok: bool
    reason: str  # OK or a short failure text ("timeout", "expect mismatch", ...)
    duration: float  # seconds, by the clock run_check was given
    detail: str = ""  # what was read, the error, the program's output ...


# --- escapes and matching (pure) -----------------------------------------------------------

def apply_escapes(text: str) -> str:
    """nanny's ``convert_str``: ``\\\\ \\r \\n \\t \\' \\"`` become the character, left to
    right; any other backslash (an unknown pair, a trailing one) is kept as written.
    (nanny 1.46 looped forever on those; the reference keeps them.)"""
    if len(text) <= 1 or "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in ESCAPES:
            out.append(ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def match_reply(expect: bytes | None, use_regex: bool, data: bytes) -> tuple[bool, str]:
    """Judge one read, as nanny's ``pinger``: (passed, reason).

    ``data`` is what the single read returned (at most READ_MAX bytes).  No expect or
    ``*``: anything passes (the caller decides whether an empty TCP read is a reply)."""
    if expect is None or expect == WILDCARD:
        return True, OK
    if use_regex:
        try:
            pattern = compile_expect(expect)
        except ValueError:
            return False, BAD_CHECK
        return (True, OK) if pattern.search(data.split(b"\0", 1)[0]) else (False, EXPECT_MISMATCH)
    want = expect[:READ_MAX]  # nanny caps the read, and so the compared length, at 254
    if len(data) < len(want):
        return False, REPLY_TOO_SHORT
    return (True, OK) if data[: len(want)] == want else (False, EXPECT_MISMATCH)


# --- POSIX extended regular expressions -> Python re --------------------------------------

# Character classes in the C locale (nanny runs regcomp without setlocale).
_POSIX_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "0-9a-zA-Z", "upper": "A-Z", "lower": "a-z",
    "space": r" \t\n\r\f\v", "blank": r" \t", "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    "print": r"\x20-\x7e", "graph": r"\x21-\x7e", "cntrl": r"\x00-\x1f\x7f", "xdigit": "0-9A-Fa-f",
}
# Backslash sequences glibc's regcomp gives a meaning in an ERE (GNU extensions).
_GNU_ESCAPES = {"w": r"\w", "W": r"\W", "s": r"\s", "S": r"\S", "b": r"\b", "B": r"\B",
                "<": r"\b(?=\w)", ">": r"\b(?<=\w)", "`": r"\A", "'": r"\Z"}
_INTERVAL = re.compile(r"\{\d+(,\d*)?\}|\{,\d+\}")  # {n} {n,} {n,m} and GNU {,m}
_QUANTIFIERS = "*+?"


def _bracket(p: str, i: int) -> tuple[str, int]:
    """Translate the bracket expression starting at p[i] == '['; returns (text, next i).
    In POSIX a backslash inside brackets is an ordinary character and ']' first is literal."""
    j = i + 1
    out = ["["]
    if j < len(p) and p[j] == "^":
        out.append("^")
        j += 1
    first = True
    while True:
        if j >= len(p):
            raise ValueError(f"unmatched [ at offset {i}")
        c = p[j]
        if c == "]" and not first:
            out.append("]")
            return "".join(out), j + 1
        if c == "[" and j + 1 < len(p) and p[j + 1] in ":=.":
            kind = p[j + 1]
            end = p.find(kind + "]", j + 2)
            if end < 0:
                raise ValueError(f"unterminated [{kind} at offset {j}")
            name = p[j + 2:end]
            if kind == ":":
                if name not in _POSIX_CLASSES:
                    raise ValueError(f"unknown character class [:{name}:]")
                out.append(_POSIX_CLASSES[name])
            elif len(name) == 1:  # [=c=] and [.c.] with one character: the character
                out.append(re.escape(name))
            else:
                raise ValueError(f"unsupported collating element [{kind}{name}{kind}]")
            j = end + 2
        elif c == "-" and not first and j + 1 < len(p) and p[j + 1] != "]":
            out.append("-")  # a range; first or last, '-' is literal
            j += 1
        else:
            out.append(re.escape(c))
            j += 1
        first = False


def posix_ere(pattern: str) -> str:
    """A POSIX extended regular expression (glibc ``regcomp(REG_EXTENDED)``) as Python
    ``re`` syntax, to be compiled with ``re.DOTALL`` and searched for.

    What differs and is translated: brackets (backslash literal, ``[:class:]``), ``$``
    only at the very end (``\\Z``: Python's ``$`` also matches before a final newline),
    ``.`` matching newline (DOTALL), a quantifier with nothing to repeat is a literal,
    stacked quantifiers (``a**``) apply to the quantified atom (Python reads ``*?``
    ``*+`` as lazy and possessive), ``\\<`` ``\\>`` word edges, a backslash before an
    ordinary character is that character (``\\d`` is ``d``, as in glibc).  Backreferences
    ``\\1``-``\\9`` and ``\\w \\W \\s \\S \\b \\B`` keep their GNU meaning.  Matching existence
    does not depend on leftmost-longest vs leftmost-first, so only syntax is translated.
    Raises ValueError for what cannot be translated."""
    # Pieces of the current group level: (text, kind); kind "atom" can take a
    # quantifier, "quantified" is an atom with one, "other" (| ^ $) cannot.
    stack: list[list[tuple[str, str]]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i]
        pieces = stack[-1]
        last = pieces[-1][1] if pieces else "other"
        if c in _QUANTIFIERS or (c == "{" and _INTERVAL.match(pattern, i)):
            if c == "{":
                m = _INTERVAL.match(pattern, i)
                assert m is not None
                quant = m.group(0)
                i = m.end()
            else:
                quant = c
                i += 1
            if last == "other":  # nothing to repeat: glibc takes it literally
                pieces.append((re.escape(quant), "atom"))
            elif last == "quantified":
                text, _ = pieces.pop()
                pieces.append((f"(?:{text}){quant}", "quantified"))
            else:
                text, _ = pieces.pop()
                pieces.append((text + quant, "quantified"))
            continue
        if c == "[":
            text, i = _bracket(pattern, i)
            pieces.append((text, "atom"))
            continue
        i += 1
        if c == "\\":
            if i >= len(pattern):
                raise ValueError("trailing backslash")
            e = pattern[i]
            i += 1
            if e in _GNU_ESCAPES:
                pieces.append((_GNU_ESCAPES[e], "other" if e in "bB<>`'" else "atom"))
            elif e in "123456789":
                pieces.append(("\\" + e, "atom"))
            else:
                pieces.append((re.escape(e), "atom"))
        elif c == "(":
            stack.append([])
        elif c == ")":
            if len(stack) == 1:
                raise ValueError(f"unmatched ) at offset {i - 1}")
            inner = "".join(t for t, _ in stack.pop())
            stack[-1].append((f"({inner})", "atom"))
        elif c == "|":
            pieces.append(("|", "other"))
        elif c == "^":
            pieces.append(("^", "other"))
        elif c == "$":
            pieces.append((r"\Z", "other"))
        elif c == ".":
            pieces.append((".", "atom"))
        else:
            pieces.append((re.escape(c), "atom"))
    if len(stack) != 1:
        raise ValueError("unmatched (")
    return "".join(t for t, _ in stack[0])


@functools.lru_cache(maxsize=256)
def compile_expect(expect: bytes) -> re.Pattern[bytes]:
    """The compiled regex for an expect string (bytes, C locale); ValueError when it is
    not a valid POSIX extended regex."""
    text = expect.decode("utf-8", "surrogateescape")
    try:
        translated = posix_ere(text)
        return re.compile(translated.encode("utf-8", "surrogateescape"), re.DOTALL)
    except (ValueError, re.error) as exc:
        raise ValueError(f"expect {text!r} is not a valid extended regular expression: {exc}") from None


# --- the spec from lvs.cf (pure) ---------------------------------------------------------------

def _encode(text: str | None) -> bytes | None:
    return None if text is None else apply_escapes(text).encode("utf-8")


def spec_for(config: Config, virtual: VirtualServer, server: RealServer, *,
             failed_program_passes: bool = False) -> CheckSpec:
    """The check nanny would run for `server` of `virtual` (lvsd's nanny command line,
    reference 3.2, and nanny's option handling, 4.2).  `config` is the whole checked
    file (kept for checks that will read globals); the result depends only on the
    virtual and the server."""
    del config  # nothing global decides a probe today (rsh_command is the load monitor's)
    if server.address is None:
        raise ValueError(f'server "{server.name}" of virtual "{virtual.name}" has no address')
    address, port = str(server.address), virtual.server_port(server)
    send, expect = virtual.send, virtual.expect
    if virtual.send_program is not None:
        send = None  # nanny: send_program overrides the send string
    elif virtual.port == HTTP_PORT and send is None and expect is None:
        send, expect = HTTP_SEND.decode(), HTTP_EXPECT.decode()  # nanny's default web probe
    expect_bytes = _encode(expect)
    use_regex = bool(virtual.use_regex and expect_bytes is not None and expect_bytes != WILDCARD)
    problem = None
    if use_regex:
        try:
            compile_expect(expect_bytes)  # type: ignore[arg-type]
        except ValueError as exc:
            problem = str(exc)
    argv = None
    if virtual.send_program is not None:
        kind = KIND_PROGRAM
        try:
            argv = prog.program_argv(virtual.send_program, address, port)
        except prog.ProgramLineError as exc:
            problem = str(exc)
    else:
        kind = KIND_UDP if virtual.protocol == "udp" else KIND_TCP
    return CheckSpec(kind=kind, address=address, port=port, timeout=float(virtual.timeout),
                     send=_encode(send), expect=expect_bytes, use_regex=use_regex, program=argv,
                     failed_program_passes=failed_program_passes, problem=problem)


# --- running a check ----------------------------------------------------------------------------

class Conn(Protocol):
    """A connected socket, as the socket probe uses it (tests inject fakes)."""

    async def send(self, data: bytes) -> None: ...
    async def recv(self, size: int) -> bytes: ...
    def close(self) -> None: ...


Transport = Callable[[CheckSpec], Awaitable[Conn]]  # connect to spec.address:spec.port


class SocketConn:
    """A non-blocking TCP or UDP socket driven by the running event loop.  No source
    address is bound: the kernel picks it, as for nanny on the router."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    async def send(self, data: bytes) -> None:
        await self.loop.sock_sendall(self.sock, data)

    async def recv(self, size: int) -> bytes:
        return await self.loop.sock_recv(self.sock, size)

    def close(self) -> None:
        self.sock.close()


async def open_socket(spec: CheckSpec) -> SocketConn:
    """The default transport: connect a socket of the spec's kind to the real server."""
    kind = socket.SOCK_DGRAM if spec.kind == KIND_UDP else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (spec.address, spec.port))
    except BaseException:
        sock.close()
        raise
    return SocketConn(sock)


def _quote(data: bytes) -> str:
    text = repr(data)
    return text if len(text) <= DETAIL_MAX else text[:DETAIL_MAX] + "..."


def _error_reason(exc: OSError, spec: CheckSpec, phase: str) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return PORT_UNREACHABLE if spec.kind == KIND_UDP else CONNECTION_REFUSED
    if exc.errno in _UNREACHABLE_ERRNOS:
        return HOST_UNREACHABLE
    if exc.errno in _RESET_ERRNOS:
        return CONNECTION_RESET
    return _PHASE_FAILURE[phase]


async def _socket_check(spec: CheckSpec, transport: Transport) -> tuple[bool, str, str]:
    where = f"{spec.address}:{spec.port}"
    phase = "connect"
    conn: Conn | None = None
    try:
        async with asyncio.timeout(spec.timeout):
            conn = await transport(spec)
            if spec.send is not None:
                phase = "send"
                await conn.send(spec.send)
            if spec.expect is None and spec.kind == KIND_TCP:
                return True, OK, f"connected to {where}"
            phase = "read"  # nanny: one read, whatever arrived first
            data = await conn.recv(READ_MAX)
    except TimeoutError:
        waiting = {"connect": "connecting to", "send": "sending to", "read": "waiting for a reply from"}[phase]
        return False, TIMEOUT, f"{waiting} {where}: nothing after {spec.timeout:g} s"
    except OSError as exc:
        return False, _error_reason(exc, spec, phase), f"{phase} {where}: {exc.strerror or exc}"
    finally:
        if conn is not None:
            conn.close()
    if not data and spec.kind == KIND_TCP:
        return False, CONNECTION_CLOSED, f"{where} closed the connection without a reply"
    ok, reason = match_reply(spec.expect, spec.use_regex, data)
    detail = f"read {_quote(data)}"
    if not ok and spec.expect is not None:
        detail += f", expected {_quote(spec.expect)}" + (" (regex)" if spec.use_regex else "")
    return ok, reason, detail


async def run_check(spec: CheckSpec, *, clock: Callable[[], float] = time.monotonic,
                    transport: Transport | None = None) -> CheckResult:
    """Run one check; never raises for a failing server (cancellation propagates).

    ``clock`` times the check (``duration``); ``transport`` replaces the socket
    connection (tests).  The time limit is ``spec.timeout`` for the whole check."""
    start = clock()
    if spec.problem is not None:
        ok, reason, detail = False, BAD_CHECK, spec.problem
    elif spec.kind == KIND_PROGRAM:
        assert spec.program is not None
        out = await prog.run_program(spec.program, timeout=spec.timeout, expect=spec.expect,
                                     failed_program_passes=spec.failed_program_passes)
        ok, reason, detail = out.ok, out.reason, out.detail
    elif spec.kind in (KIND_TCP, KIND_UDP):
        ok, reason, detail = await _socket_check(spec, transport or open_socket)
    else:
        raise ValueError(f"unknown check kind {spec.kind!r} (expected one of {', '.join(KINDS)})")
    return CheckResult(ok, reason, clock() - start, detail)
