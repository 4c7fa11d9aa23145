"""dump(): canonical layout, quoting, and the round trip on hand-written files."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pylvs.config.dump import UnrepresentableError, dump, quote, quote_problem
from pylvs.config.model import (
    BoundAddress,
    Config,
    FailoverService,
    RealServer,
    VirtualServer,
)
from pylvs.config.parse import StaticResolver, parse, tokenize

RESOLVER = StaticResolver()
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("lvs.cf.*"))


@pytest.mark.parametrize("text,written", [
    ("eth0:1", "eth0:1"), ("", '""'), ("a b", '"a b"'), ("say \"hi\" now", "'say \"hi\" now'"),
    ("it's here", '"it\'s here"'), ("'x", '"\'x"'), ('"x', "'\"x'"), ('mid"quote', 'mid"quote'),
    ("=", '"="'), ("{", '"{"'), ("}", '"}"'), ("[", '"["'), ("]", '"]"'), ("#x", "#x"),
    ("tab\there", '"tab\there"'),
])
def test_quote_writes_one_token_that_reads_back(text, written):
    assert quote(text) == written
    toks = tokenize(f"k = {written}")
    assert len(toks) == 3 and toks[2].text == text


@pytest.mark.parametrize("text", ["a\"b' c", "line\nbreak", "cr\rhere", "nul\0"])
def test_unrepresentable_strings(text):
    assert quote_problem(text) is not None
    with pytest.raises(UnrepresentableError):
        quote(text)


def test_defaults_dump_what_the_gui_always_writes():
    assert dump(Config()) == (
        "serial_no = 0\nservice = lvs\nbackup_active = 0\nbackup = 0.0.0.0\n"
        "heartbeat_port = 539\nkeepalive = 2\ndeadtime = 5\nnetwork = nat\ndebug_level = NONE\n")


def test_layout_and_indentation():
    c = Config(primary=IPv4Address("192.0.2.2"), virtuals=(VirtualServer(
        "my web", active=True, address=BoundAddress(IPv4Address("192.0.2.10"), "eth0:1"),
        send="GET / HTTP/1.0\\r\\n\\r\\n", dirs=("/a", "b c"),
        servers=(RealServer("w1", IPv4Address("10.0.0.1"), True, 2, 8080),)),))
    text = dump(c, header="generated\nby test")
    assert text.startswith("# generated\n# by test\nserial_no = 0\nprimary = 192.0.2.2\n")
    assert '\nvirtual "my web" {\n     active = 1\n     address = 192.0.2.10 eth0:1\n' in text
    assert '     send = "GET / HTTP/1.0\\r\\n\\r\\n"\n' in text
    assert '     dirs = [ /a "b c" ]\n' in text
    assert ("\n     server w1 {\n         address = 10.0.0.1\n         active = 1\n"
            "         weight = 2\n         port = 8080\n     }\n}\n") in text
    assert parse(text, resolver=RESOLVER).config == c


def test_failover_blocks_round_trip():
    c = Config(service="fos", primary=IPv4Address("192.0.2.2"), failovers=(FailoverService(
        "ftp", active=True, address=BoundAddress(IPv4Address("192.0.2.10"), "eth0:1"), port=21,
        start_cmd="/etc/init.d/vsftpd start", stop_cmd="/etc/init.d/vsftpd stop"),))
    text = dump(c)
    assert "failover ftp {\n" in text and '     start_cmd = "/etc/init.d/vsftpd start"\n' in text
    result = parse(text, resolver=RESOLVER)
    assert result.ok and result.config == c


def test_primary_unset_is_not_written():
    assert "primary" not in dump(Config())


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_round_trip_and_dump_is_a_fixed_point(path):
    config = parse(path.read_text(), str(path), RESOLVER).config
    text = dump(config)
    again = parse(text, resolver=RESOLVER)
    assert again.ok and again.config == config
    assert dump(again.config) == text
