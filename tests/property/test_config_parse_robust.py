"""The parser never raises on any text: every problem becomes a located diagnostic."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.config.check import check
from pylvs.config.model import KEYWORDS
from pylvs.config.parse import StaticResolver, parse, split_lines

WORDS = sorted({k.name for k in KEYWORDS}) + [
    "=", "{", "}", "[", "]", "#", '"', "'", '"a b"', "'x", "1", "0", "017", "0x10", "-1", "08",
    "192.0.2.1", "0.0.0.0", "255.255.255.0", "255.0.255.0", "eth0:1", "http", "wlc", "udp",
    "nat", "lvs", "fos", "junk", "a", "\t", "",
]
lines = st.lists(st.sampled_from(WORDS), max_size=6).map(" ".join)
texts = st.lists(lines, max_size=25).map(lambda ls: "\n".join(ls))
RESOLVER = StaticResolver(hosts={"a": "192.0.2.9"}, ports={"http": 80})


@settings(max_examples=150, deadline=None)
@given(texts)
def test_parse_and_check_never_raise_and_locate_every_diagnostic(text):
    result = parse(text, "fuzz.cf", RESOLVER)
    diagnostics = list(result.diagnostics) + check(result.config, "fuzz.cf")
    last = max(len(split_lines(text)), 1)
    for d in diagnostics:
        assert 0 <= d.line <= last, d
        assert str(d).startswith("fuzz.cf")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_raises(text):
    parse(text, "any.cf", RESOLVER)
