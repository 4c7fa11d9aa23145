"""parse(dump(c)) == c on generated configurations; quote() against tokenize()."""

from __future__ import annotations

from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.config.dump import dump, quote, quote_problem
from pylvs.config.model import (
    NETWORKS,
    PROTOCOLS,
    RESERVATION_ACTIONS,
    SCHEDULERS,
    SERVICES,
    BoundAddress,
    Config,
    FailoverService,
    RealServer,
    VirtualServer,
)
from pylvs.config.parse import StaticResolver, parse, tokenize

RESOLVER = StaticResolver()  # dumped configs hold addresses only, never names

# Any text a line can carry: no line breaks or NUL; surrogates cannot be encoded.
chars = st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",))
raw_text = st.text(chars, max_size=24)
# Bias towards the cases that matter for quoting: blanks, quotes, grammar words.
tricky = st.sampled_from(["", " ", "a b", "'x", '"x', 'say "hi"', "it's", "=", "{", "}", "[", "]",
                          "#x", "\tt", 'a"b', "GET / HTTP/1.0\\r\\n\\r\\n", "%h %p"])
strings = st.one_of(raw_text, tricky).filter(lambda s: quote_problem(s) is None)
names = strings.filter(bool)
addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
nonzero_addresses = st.integers(1, 2**32 - 1).map(IPv4Address)
masks = addresses.filter(lambda a: a != IPv4Address("255.255.255.255"))  # /32 reads as unset
ints = st.integers(-(2**31), 2**32)
bound = st.builds(BoundAddress, addresses, names)


def opt(strategy):
    return st.none() | strategy


servers = st.builds(RealServer, name=names, address=opt(addresses), active=st.booleans(),
                    weight=ints, port=opt(ints))

virtuals = st.builds(
    VirtualServer, name=names, active=st.booleans(), address=opt(bound), vip_nmask=masks,
    port=ints, protocol=st.sampled_from(PROTOCOLS), fwmark=ints,
    scheduler=st.sampled_from(SCHEDULERS), persistent=ints, pmask=masks, send=opt(strings),
    expect=opt(strings), use_regex=st.booleans(), send_program=opt(strings),
    load_monitor=opt(strings), timeout=ints, reentry=ints, quiesce_server=st.booleans(),
    sorry_server=opt(nonzero_addresses), client_monitor=strings, master=opt(nonzero_addresses),
    dirs=st.lists(strings, max_size=3).map(tuple), start_cmd=opt(strings), stop_cmd=opt(strings),
    servers=st.lists(servers, max_size=3).map(tuple),
)

failovers = st.builds(
    FailoverService, name=names, active=st.booleans(), address=opt(bound), vip_nmask=masks,
    port=ints, send=opt(strings), expect=opt(strings), timeout=ints, reentry=ints,
    start_cmd=opt(strings), stop_cmd=opt(strings),
)

# A file holds virtual blocks or failover blocks, not both (that is a parse error).
blocks = st.one_of(
    st.tuples(st.lists(virtuals, max_size=3).map(tuple), st.just(())),
    st.tuples(st.just(()), st.lists(failovers, min_size=1, max_size=2).map(tuple)),
)


# Kind.SECONDS: whole numbers, or decimals as an operator writes them (0.2, 1.25).
seconds = ints | st.decimals(min_value=0, max_value=3600, places=3, allow_nan=False).map(float)


@st.composite
def configs(draw):
    virtual_blocks, failover_blocks = draw(blocks)
    return Config(
        serial_no=draw(ints), service=draw(st.sampled_from(SERVICES)),
        primary=draw(addresses), primary_private=draw(opt(nonzero_addresses)),
        primary_shared=draw(opt(strings)), backup_active=draw(st.booleans()),
        backup=draw(addresses), backup_private=draw(opt(nonzero_addresses)),
        backup_shared=draw(opt(strings)), heartbeat=draw(st.booleans()),
        heartbeat_port=draw(ints), keepalive=draw(seconds), deadtime=draw(seconds),
        network=draw(st.sampled_from(NETWORKS)), nat_router=draw(opt(bound)),
        nat_nmask=draw(masks), reservation_conflict_action=draw(opt(st.sampled_from(RESERVATION_ACTIONS))),
        debug_level=draw(strings), rsh_command=draw(strings), sync=draw(st.booleans()),
        ipvsadm=draw(strings), active_cmd=draw(opt(strings)), inactive_cmd=draw(opt(strings)),
        monitor_links=draw(ints), syncdaemon=draw(st.booleans()), syncd_iface=draw(strings),
        syncd_id=draw(ints), tcp_timeout=draw(ints), tcpfin_timeout=draw(ints),
        udp_timeout=draw(ints), hard_shutdown=draw(st.booleans()),
        syncd_port=draw(ints), syncd_unicast=draw(st.booleans()), garp_count=draw(ints),
        garp_interval=draw(seconds), garp_refresh=draw(seconds), config_sync=draw(st.booleans()),
        config_sync_secret=draw(opt(strings)), config_sync_port=draw(ints),
        config_sync_interval=draw(seconds),
        virtuals=virtual_blocks, failovers=failover_blocks,
    )


@settings(max_examples=200, deadline=None)
@given(configs())
def test_parse_dump_round_trip(config):
    text = dump(config)
    result = parse(text, "gen.cf", RESOLVER)
    assert result.ok, (text, result.diagnostics)
    assert result.config == config
    assert dump(result.config) == text  # canonical: a fixed point


@settings(max_examples=300, deadline=None)
@given(strings)
def test_quote_reads_back_as_one_token(text):
    toks = tokenize(f"key = {quote(text)}")
    assert len(toks) == 3 and toks[2].text == text
