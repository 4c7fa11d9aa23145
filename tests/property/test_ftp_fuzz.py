"""The FTP helper's reading of the control stream, fuzzed (hypothesis): commands and
replies built from the grammar and then bent (random case, numbers out of range, odd
delimiters, IPv6 EPRT, garbage around them, lines cut short or split, lines past
MAX_LINE) and plain random bytes.  The numba parsers (pylvs.dataplane.ftp) must agree
with the plain-Python twins in tests/naive.py and never raise; through the engine, a
server's segment after PASV comes out rewritten exactly when the twin finds a 227
naming the real server, and byte for byte unchanged otherwise."""

from __future__ import annotations

import naive
from ftp_session import Session
from golden import RIP1, VIP, ip2int
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP

from pylvs.dataplane import ftp

num = st.one_of(st.integers(0, 255), st.integers(256, 99999))
small = st.integers(0, 255)
delim = st.sampled_from(["|", "!", "#", "1", ".", " ", "\x7f", "a"])
case = st.sampled_from([str.upper, str.lower, str.title])
six = st.lists(num, min_size=4, max_size=7).map(lambda ns: ",".join(map(str, ns)))
dotted = st.lists(num, min_size=3, max_size=5).map(lambda ns: ".".join(map(str, ns)))
port = st.one_of(st.integers(0, 65535), st.integers(65536, 999999))

commands = st.one_of(
    st.builds(lambda c: c("pasv"), case),
    st.builds(lambda c, rest: c("epsv") + rest, case, st.sampled_from(["", " ALL", " 1", "x"])),
    st.builds(lambda c, s: c("port") + " " + s, case, six),
    st.builds(lambda d, n, a, p: f"EPRT {d}{n}{d}{a}{d}{p}{d}", delim, st.sampled_from(["1", "2", "3"]),
              st.one_of(dotted, st.just("2001:db8::7"), st.just("::ffff:1.2.3.4")), port),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
replies = st.one_of(
    st.builds(lambda s, tail: f"227 Entering Passive Mode ({s}){tail}", six, st.sampled_from(["", ".", " ok"])),
    st.builds(lambda s: f"227 =({s})", six),
    st.builds(lambda d, p: f"229 Entering Extended Passive Mode ({d}{d}{d}{p}{d})", delim, port),
    st.builds(lambda code, t: f"{code} {t}", st.sampled_from(["150", "226", "227", "229", "2270"]),
              st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)),
)


def bend(line: str, end: str, garbage: bytes, cut: int | None, pad: int) -> bytes:
    """The line as a segment: its ending, garbage after it, cut short, or padded long."""
    data = (line + " " * pad).encode("latin-1") + end.encode() + garbage
    return data if cut is None else data[:cut]


segments = st.builds(
    bend,
    st.one_of(commands, replies),
    st.sampled_from(["\r\n", "\n", "\r", ""]),
    st.binary(max_size=20),
    st.one_of(st.none(), st.integers(0, 60)),
    st.sampled_from([0, 0, 0, 480, 520]),
)
anything = st.one_of(segments, st.binary(max_size=600))


@settings(max_examples=600, deadline=None)
@given(anything)
def test_parsers_agree_with_the_twins_and_never_raise(data):
    assert ftp.parse_command(data) == naive.ftp_command(data)
    assert ftp.parse_reply(data) == naive.ftp_reply(data)


def test_the_grammar_is_reached():
    """The generators do produce each kind (a guard against a fuzz that tests nothing)."""
    assert naive.ftp_command(b"PORT 203,0,113,7,200,10\r\n")[0] == "PORT"
    assert naive.ftp_command(b"eprt |1|203.0.113.7|51300|\r\n")[0] == "EPRT"
    assert naive.ftp_command(b"EPRT |2|2001:db8::7|51300|\r\n")[0] == "none"
    assert naive.ftp_reply(b"227 Entering Passive Mode (10,0,0,2,39,16).\r\n")[:3] == ("227", ip2int(RIP1), 10000)
    assert naive.ftp_reply(b"229 Entering Extended Passive Mode (|||10001|)\r\n")[:3] == ("229", 0, 10001)
    assert naive.ftp_reply(b"227 Entering Passive Mode (10,0,0,2,39,16)")[0] == "none"  # no line end yet


rip = RIP1.replace(".", ",")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    segments,
    st.builds(lambda p, tail, cut: (f"227 Entering Passive Mode ({rip},{p >> 8},{p & 255}){tail}\r\n"
                                    .encode()[:cut]), st.integers(1, 65535), st.sampled_from(["", ".", " x"]),
              st.one_of(st.none(), st.integers(10, 60))),
).filter(lambda d: len(d) > 0))
def test_a_server_segment_is_rewritten_only_when_it_is_a_227_naming_the_server(data):
    s = Session()
    s.command(b"PASV\r\n")
    out = bytes(s.reply(data)[TCP].payload)
    kind, addr, port, start, stop = naive.ftp_reply(data)
    if kind == "227" and addr == ip2int(RIP1):
        assert out == naive.ftp_rewrite_227(data, start, stop, ip2int(VIP), port)
        assert s.entry(0, port) is not None
    else:
        assert out == data
    # the next segment follows the stream the client saw, whatever happened to this one
    nxt = s.reply(b"150 ok\r\n")
    assert nxt[TCP].seq == 5001 + len(out)
