"""pylvs.health.probes without a network: escapes (reference 4.3), matching one read as
nanny's pinger does (4.2), the POSIX regex translation, spec_for on checked lvs.cf
texts, and run_check's socket flow over an injected fake transport."""

from __future__ import annotations

import asyncio
import errno
import re

import pytest

from pylvs.config import check_text
from pylvs.health import probes as pr
from pylvs.health.probes import CheckResult, CheckSpec, apply_escapes, match_reply, run_check, spec_for

# --- escapes (reference 4.3) ---------------------------------------------------------------


@pytest.mark.parametrize("raw, cooked", [
    (r"a\\b", "a\\b"),
    (r"a\rb", "a\rb"),
    (r"a\nb", "a\nb"),
    (r"a\tb", "a\tb"),
    (r"a\'b", "a'b"),
    (r'a\"b', 'a"b'),
    (r"GET / HTTP/1.0\r\n\r\n", "GET / HTTP/1.0\r\n\r\n"),
    (r"\\n", "\\n"),  # left to right: \\ first, then a plain n
    (r"\\\n", "\\\n"),
    (r"a\qb", r"a\qb"),  # unknown pair: kept as written
    (r"\d+\.", r"\d+\."),  # so regex escapes survive
    ("ab\\", "ab\\"),  # trailing backslash kept
    ("\\", "\\"),  # one character: not processed
    ("n", "n"),
    ("", ""),
    ("plain", "plain"),
])
def test_escapes(raw: str, cooked: str) -> None:
    assert apply_escapes(raw) == cooked


# --- matching one read -----------------------------------------------------------------------


@pytest.mark.parametrize("expect, regex, data, ok, reason", [
    (b"HTTP", False, b"HTTP/1.0 200 OK\r\n", True, pr.OK),  # prefix
    (b"HTTP", False, b"HTTP", True, pr.OK),
    (b"HTTP", False, b"HTT", False, pr.REPLY_TOO_SHORT),  # one read only: too short fails
    (b"HTTP", False, b"", False, pr.REPLY_TOO_SHORT),
    (b"HTTP", False, b"SMTP ready", False, pr.EXPECT_MISMATCH),
    (b"HTTP", False, b"xHTTP", False, pr.EXPECT_MISMATCH),  # prefix, not substring
    (b"http", False, b"HTTP/1.0", False, pr.EXPECT_MISMATCH),  # case matters
    (b"*", False, b"x", True, pr.OK),
    (b"*", False, b"", True, pr.OK),  # an empty datagram is a reply (TCP EOF is judged before)
    (b"*", True, b"anything", True, pr.OK),  # * is the wildcard in regex mode too
    (None, False, b"", True, pr.OK),  # udp without expect: any datagram
    (None, False, b"rs1 ping", True, pr.OK),
    (b"HTTP/1.[01] 200", True, b"HTTP/1.1 200 OK", True, pr.OK),
    (b"HTTP/1.[01] 200", True, b"HTTP/1.1 404 Not Found", False, pr.EXPECT_MISMATCH),
    (b"200", True, b"HTTP/1.1 200 OK", True, pr.OK),  # a search, not anchored
    (b"^200", True, b"HTTP/1.1 200 OK", False, pr.EXPECT_MISMATCH),
    (b"OK$", True, b"HTTP/1.1 200 OK\n", False, pr.EXPECT_MISMATCH),  # $ only at the very end
    (b"OK.X", True, b"OK\nX", True, pr.OK),  # . matches a newline (no REG_NEWLINE)
    (b"after", True, b"before\0after", False, pr.EXPECT_MISMATCH),  # C string: stops at NUL
    (b".*", True, b"", True, pr.OK),  # a regex matching the empty string passes an empty read
    (b"(", True, b"(", False, pr.BAD_CHECK),
])
def test_match_reply(expect: bytes | None, regex: bool, data: bytes, ok: bool, reason: str) -> None:
    assert match_reply(expect, regex, data) == (ok, reason)


def test_long_plain_expect_compares_the_first_254_bytes() -> None:
    expect = b"x" * 300
    assert match_reply(expect, False, b"x" * pr.READ_MAX) == (True, pr.OK)
    assert match_reply(expect, False, b"x" * 253) == (False, pr.REPLY_TOO_SHORT)


# --- POSIX ERE -> Python re ---------------------------------------------------------------------


@pytest.mark.parametrize("ere, text, found", [
    ("[[:digit:]]{3}", "code 200", True),
    ("[[:digit:]]{3}", "code 20", False),
    ("[[:alpha:]]+[[:space:]]", "ab c", True),
    ("[[:upper:]][[:lower:]]", "Ok", True),
    ("[^[:print:]]", "abc", False),
    (r"[\]", "a\\b", True),  # backslash is literal inside brackets
    (r"[\n]", "n", True),  # ... so [\n] is backslash or n
    ("[]x]", "]", True),  # ] first is literal
    ("[a-]", "-", True),  # - last is literal
    ("[-a]", "-", True),
    ("[a-c]", "b", True),
    ("a{2}", "a", False),
    ("a{,2}b", "b", True),  # GNU {,m}
    ("a{x", "a{x", True),  # not an interval: literal
    ("*a", "*a", True),  # nothing to repeat: literal
    ("(*a)", "*a", True),
    ("a|*b", "*b", True),
    ("a**", "aaa", True),  # stacked quantifiers
    ("a+?", "a", True),  # (a+)? in POSIX, not lazy
    ("a*+b", "aab", True),  # (a*)+ in POSIX, not possessive
    (r"\.", ".", True),
    (r"\.", "x", False),
    (r"\d", "d", True),  # glibc: \d is a plain d
    (r"\d", "1", False),
    (r"\w+", "abc", True),
    (r"\<ok\>", "it is ok now", True),
    (r"\<ok\>", "took", False),
    (r"(ab)\1", "abab", True),
    ("(?i)x", "?ix", True),  # no Python extensions: (? is a group starting with a literal ?
    ("a#b", "a#b", True),
    ("HTTP/1.[01] 200", "HTTP/1.0 200", True),
    ("HTTP/1\\.[01] (200|301)", "HTTP/1.1 301 Moved", True),
])
def test_posix_ere(ere: str, text: str, found: bool) -> None:
    pattern = re.compile(pr.posix_ere(ere), re.DOTALL)
    assert bool(pattern.search(text)) is found


@pytest.mark.parametrize("ere", ["(", "a)", "[abc", "[[:nope:]]", "a\\", "a{3,1}", "[[.ab.]]"])
def test_posix_ere_errors(ere: str) -> None:
    with pytest.raises(ValueError):
        pr.compile_expect(ere.encode())


# --- spec_for from checked lvs.cf ----------------------------------------------------------------

HEAD = "serial_no = 1\nprimary = 10.0.0.1\nservice = lvs\nnetwork = nat\nnat_router = 10.0.0.254 eth1:1\n"


def _spec(virtual_body: str, server_body: str = "", index: int = 0, *, refused: str | None = None) -> CheckSpec:
    """The spec of a server of a one-virtual config; ``refused``: the config check must
    reject the text with this message fragment (spec_for still has to cope with it)."""
    text = (HEAD + "virtual v {\n  active = 1\n  address = 192.0.2.10 eth0:1\n" + virtual_body
            + "  server rs1 {\n    address = 10.0.0.11\n    active = 1\n" + server_body + "  }\n"
            + "  server rs2 {\n    address = 10.0.0.12\n    active = 1\n    port = 8080\n  }\n}\n")
    result = check_text(text)
    if refused is None:
        assert result.ok, result.diagnostics
    else:
        assert not result.ok and any(refused in d.message for d in result.diagnostics), result.diagnostics
    v = result.config.virtuals[0]
    return spec_for(result.config, v, v.servers[index])


def test_default_http_probe_on_port_80() -> None:
    s = _spec("  port = 80\n")
    assert s == CheckSpec(kind="tcp", address="10.0.0.11", port=80, timeout=10.0,
                          send=b"GET / HTTP/1.0\r\n\r\n", expect=b"HTTP")


def test_default_http_probe_uses_the_virtual_port_and_probes_the_real_port() -> None:
    s = _spec("  port = 80\n", index=1)
    assert (s.port, s.send, s.expect) == (8080, pr.HTTP_SEND, pr.HTTP_EXPECT)
    s = _spec("  port = 8080\n")  # not 80: a bare connect
    assert (s.kind, s.port, s.send, s.expect) == ("tcp", 8080, None, None)


@pytest.mark.parametrize("body", ['  send = "HELO x"\n', "  expect = SSH\n", '  send_program = "/bin/true"\n'])
def test_anything_configured_disables_the_default_http_probe(body: str) -> None:
    s = _spec("  port = 80\n" + body)
    assert pr.HTTP_SEND not in (s.send,) and s.expect != pr.HTTP_EXPECT


def test_tcp_send_expect_with_escapes_and_timeout() -> None:
    s = _spec('  port = 25\n  send = "HELO pylvs\\r\\n"\n  expect = "220"\n  timeout = 6\n')
    assert s == CheckSpec(kind="tcp", address="10.0.0.11", port=25, timeout=6.0,
                          send=b"HELO pylvs\r\n", expect=b"220")


def test_regex_expect() -> None:
    s = _spec('  port = 80\n  send = "GET / HTTP/1.0\\r\\n\\r\\n"\n  expect = "HTTP/1.[01] 200"\n  use_regex = 1\n')
    assert (s.use_regex, s.expect, s.problem) == (True, b"HTTP/1.[01] 200", None)


def test_bad_regex_is_a_problem_not_an_exception() -> None:
    s = _spec('  port = 81\n  expect = "(oops"\n  use_regex = 1\n', refused="not a valid extended regular expression")
    assert s.problem and "(oops" in s.problem
    result = asyncio.run(run_check(s, transport=_never_called))
    assert (result.ok, result.reason) == (False, pr.BAD_CHECK)


def test_udp() -> None:
    s = _spec('  port = 9000\n  protocol = udp\n  send = "ping"\n')
    assert (s.kind, s.port, s.send, s.expect) == ("udp", 9000, b"ping", None)
    s = _spec('  port = 53\n  protocol = udp\n  send = "q"\n  expect = "*"\n  use_regex = 1\n')
    assert (s.expect, s.use_regex) == (b"*", False)


def test_program_replaces_h_and_p_and_ignores_send() -> None:
    s = _spec('  port = 53\n  send = "ignored"\n  send_program = "/usr/local/bin/check-dns %h %p -t 2"\n'
              '  expect = "OK"\n', index=0)
    assert (s.kind, s.program, s.send, s.expect) == (
        "program", ("/usr/local/bin/check-dns", "10.0.0.11", "53", "-t", "2"), None, b"OK")
    s = _spec('  port = 53\n  send_program = "/bin/chk --host=%h %p"\n', index=1)
    assert s.program == ("/bin/chk", "--host=%h", "8080")  # whole words only, as nanny


def test_program_line_with_an_unclosed_quote_is_a_problem() -> None:
    s = _spec("  port = 53\n  send_program = '/bin/chk \"%h'\n")
    assert s.kind == "program" and s.program is None and "send_program" in (s.problem or "")


def test_failed_program_passes_is_off_unless_asked() -> None:
    result = check_text(HEAD + 'virtual v {\n active = 1\n address = 192.0.2.10 eth0:1\n port = 53\n'
                        ' send_program = "/bin/false"\n expect = "OK"\n'
                        ' server a {\n  address = 10.0.0.11\n  active = 1\n }\n}\n')
    v = result.config.virtuals[0]
    assert not spec_for(result.config, v, v.servers[0]).failed_program_passes
    assert spec_for(result.config, v, v.servers[0], failed_program_passes=True).failed_program_passes


# --- run_check over a fake transport ----------------------------------------------------------------


class FakeConn:
    """Replies `reply` (bytes, an OSError to raise, or None to hang) to the first recv."""

    def __init__(self, reply: bytes | OSError | None, send_error: OSError | None = None) -> None:
        self.reply, self.send_error = reply, send_error
        self.sent: list[bytes] = []
        self.sizes: list[int] = []
        self.closed = False

    async def send(self, data: bytes) -> None:
        if self.send_error:
            raise self.send_error
        self.sent.append(data)

    async def recv(self, size: int) -> bytes:
        self.sizes.append(size)
        if self.reply is None:
            await asyncio.sleep(3600)
        if isinstance(self.reply, OSError):
            raise self.reply
        return self.reply[:size]

    def close(self) -> None:
        self.closed = True


def _transport(conn: FakeConn | OSError | None):
    async def connect(spec: CheckSpec) -> FakeConn:
        if conn is None:
            await asyncio.sleep(3600)
        if isinstance(conn, OSError):
            raise conn
        return conn
    return connect


async def _never_called(spec: CheckSpec) -> FakeConn:
    raise AssertionError("the transport must not be used")


def _run(spec: CheckSpec, conn: FakeConn | OSError | None) -> CheckResult:
    ticks = iter([100.0, 102.5])
    return asyncio.run(run_check(spec, clock=lambda: next(ticks), transport=_transport(conn)))


TCP = CheckSpec(kind="tcp", address="10.0.0.11", port=80, timeout=0.05, send=b"GET /\r\n", expect=b"HTTP")
UDP = CheckSpec(kind="udp", address="10.0.0.11", port=9000, timeout=0.05, send=b"ping")


def test_tcp_pass_sends_then_reads_once() -> None:
    conn = FakeConn(b"HTTP/1.0 200 OK\r\n")
    r = _run(TCP, conn)
    assert (r.ok, r.reason, r.duration) == (True, pr.OK, 2.5)  # duration by the injected clock
    assert conn.sent == [b"GET /\r\n"] and conn.sizes == [pr.READ_MAX] and conn.closed
    assert "HTTP/1.0 200" in r.detail


def test_tcp_mismatch_and_short_and_closed() -> None:
    r = _run(TCP, FakeConn(b"SMTP"))
    assert (r.ok, r.reason) == (False, pr.EXPECT_MISMATCH) and "expected b'HTTP'" in r.detail
    assert _run(TCP, FakeConn(b"HT")).reason == pr.REPLY_TOO_SHORT
    assert _run(TCP, FakeConn(b"")).reason == pr.CONNECTION_CLOSED
    star = CheckSpec(kind="tcp", address="10.0.0.11", port=81, timeout=0.05, expect=b"*")
    assert _run(star, FakeConn(b"")).reason == pr.CONNECTION_CLOSED  # * needs a byte over TCP
    assert _run(star, FakeConn(b"x")).ok


def test_tcp_without_expect_is_a_connect_check() -> None:
    bare = CheckSpec(kind="tcp", address="10.0.0.11", port=22, timeout=0.05)
    conn = FakeConn(None)  # would hang if read
    r = _run(bare, conn)
    assert r.ok and conn.sizes == [] and conn.closed
    send_only = CheckSpec(kind="tcp", address="10.0.0.11", port=22, timeout=0.05, send=b"x")
    conn = FakeConn(None)
    assert _run(send_only, conn).ok and conn.sent == [b"x"] and conn.sizes == []


@pytest.mark.parametrize("err, spec, reason", [
    (errno.ECONNREFUSED, TCP, pr.CONNECTION_REFUSED),
    (errno.EHOSTUNREACH, TCP, pr.HOST_UNREACHABLE),
    (errno.ENETUNREACH, TCP, pr.HOST_UNREACHABLE),
    (errno.EACCES, TCP, pr.CONNECTION_FAILURE),
])
def test_connect_errors(err: int, spec: CheckSpec, reason: str) -> None:
    r = _run(spec, OSError(err, "boom"))
    assert (r.ok, r.reason) == (False, reason) and "connect 10.0.0.11:80" in r.detail


def test_send_and_read_errors() -> None:
    r = _run(TCP, FakeConn(b"", send_error=OSError(errno.EPIPE, "Broken pipe")))
    assert (r.ok, r.reason) == (False, pr.CONNECTION_RESET)
    r = _run(TCP, FakeConn(b"", send_error=OSError(errno.EINVAL, "Invalid")))
    assert r.reason == pr.SEND_FAILURE
    assert _run(TCP, FakeConn(OSError(errno.ECONNRESET, "reset"))).reason == pr.CONNECTION_RESET
    assert _run(TCP, FakeConn(OSError(errno.EIO, "io"))).reason == pr.READ_FAILURE


def test_timeouts_name_the_phase() -> None:
    r = _run(TCP, None)
    assert (r.ok, r.reason) == (False, pr.TIMEOUT) and r.detail.startswith("connecting to")
    conn = FakeConn(None)
    r = _run(TCP, conn)
    assert r.reason == pr.TIMEOUT and r.detail.startswith("waiting for a reply") and conn.closed


def test_udp_any_datagram_passes_without_expect() -> None:
    conn = FakeConn(b"rs1 ping")
    r = _run(UDP, conn)
    assert r.ok and conn.sent == [b"ping"]
    assert _run(UDP, FakeConn(b"")).ok  # an empty datagram is still a datagram


def test_udp_port_unreachable_and_silence() -> None:
    r = _run(UDP, FakeConn(OSError(errno.ECONNREFUSED, "Connection refused")))
    assert (r.ok, r.reason) == (False, pr.PORT_UNREACHABLE)
    assert _run(UDP, FakeConn(None)).reason == pr.TIMEOUT


def test_udp_with_expect() -> None:
    spec = CheckSpec(kind="udp", address="10.0.0.11", port=9000, timeout=0.05, send=b"ping", expect=b"rs")
    assert _run(spec, FakeConn(b"rs2 ping")).ok
    assert _run(spec, FakeConn(b"xx")).reason == pr.EXPECT_MISMATCH


def test_unknown_kind_is_a_broken_invariant() -> None:
    with pytest.raises(ValueError, match="unknown check kind"):
        asyncio.run(run_check(CheckSpec(kind="icmp", address="10.0.0.1", port=0, timeout=1.0)))
