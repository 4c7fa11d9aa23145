"""merge(): lvs.cf saved as Piranha's lvsMergeConfig saved it, changing only the lines it must."""

from __future__ import annotations

import dataclasses
import difflib
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.config.dump import UnrepresentableError
from pylvs.config.merge import bump_serial, line_diff, merge
from pylvs.config.model import (
    NETWORKS,
    SCHEDULERS,
    BoundAddress,
    Config,
    FailoverService,
    RealServer,
    VirtualServer,
)
from pylvs.config.parse import StaticResolver, parse, tokenize
from pylvs.lab.lvscf import Service, lvs_cf

RESOLVER = StaticResolver()
EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("lvs.cf.*"))
IP = IPv4Address

HAND = """\
# lvs.cf for the merge tests: written by hand
#
serial_no = 7
# the primary router
primary   =   192.0.2.2
service = lvs

# no backup yet
backup_active = 0
backup = 0.0.0.0
heartbeat_port = 539
keepalive = 2
deadtime = 5
network = nat
# the gateway the real servers route through
nat_router = 10.0.0.254 eth1:1
debug_level = NONE

# the web site
virtual web {
\tactive = 1
\taddress = 192.0.2.10 eth0:1
\tport = 0x50
\tprotocol = tcp
\tscheduler = wlc
\ttimeout = 6
\treentry = 15

\t# first web server
\tserver w1 {
\t\taddress = 10.0.0.11
\t\tactive = 1
\t\tweight = 1
\t}
\tserver w2 {
\t\t# the bigger box
\t\taddress = 10.0.0.12
\t\tactive = 1
\t\tweight    =  2
\t}
}

virtual   mail {
    active = 1
    address = 192.0.2.11 eth0:2
    port = 25
    protocol = tcp
    scheduler = rr
    quiesce_server = 0
    timeout = 10
    reentry = 180
    # the only server
    server m1 {
        address = 10.0.0.21
        active = 1
        weight = 1
    }
}
# end of file
"""


def config_of(text: str) -> Config:
    result = parse(text, "t.cf", RESOLVER)
    assert result.ok, result.diagnostics
    return result.config


def merged(text: str, new: Config, **kwargs) -> str:
    out = merge(text, new, resolver=RESOLVER, **kwargs)
    assert config_of(out) == new
    return out


def delta(old: str, new: str) -> tuple[list[str], list[str]]:
    """(removed, added) lines of old -> new, line breaks included."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            removed += a[i1:i2]
            added += b[j1:j2]
    return removed, added


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


def virtual(config: Config, name: str) -> VirtualServer:
    return next(v for v in config.virtuals if v.name == name)


def edit_virtual(config: Config, vname: str, **changes) -> Config:
    return dataclasses.replace(config, virtuals=tuple(
        dataclasses.replace(v, **changes) if v.name == vname else v for v in config.virtuals))


def edit_server(config: Config, vname: str, sname: str, **changes) -> Config:
    v = virtual(config, vname)
    servers = tuple(dataclasses.replace(s, **changes) if s.name == sname else s for s in v.servers)
    return edit_virtual(config, vname, servers=servers)


OLD = config_of(HAND)


# --- keyword edits ------------------------------------------------------------------------
def test_changing_one_scheduler_changes_exactly_one_line():
    out = merged(HAND, edit_virtual(OLD, "mail", scheduler="lc"))
    assert delta(HAND, out) == (["    scheduler = rr\n"], ["    scheduler = lc\n"])
    assert comments(out) == comments(HAND)
    assert "\tport = 0x50\n" in out and "primary   =   192.0.2.2\n" in out


def test_a_changed_value_is_rewritten_in_place_with_its_indentation():
    new = edit_server(edit_virtual(OLD, "web", port=8080), "web", "w2", weight=3)
    out = merged(HAND, new)
    assert delta(HAND, out) == (["\tport = 0x50\n", "\t\tweight    =  2\n"], ["\tport = 8080\n", "\t\tweight = 3\n"])


def test_an_unchanged_value_keeps_its_spelling():
    assert OLD.virtuals[0].port == 80
    out = merged(HAND, edit_virtual(bump_serial(OLD), "web", port=80))
    assert delta(HAND, out) == (["serial_no = 7\n"], ["serial_no = 8\n"])


def test_adding_a_keyword_inserts_one_line_after_the_last_keyword_of_its_block():
    new = edit_virtual(OLD, "web", persistent=300)
    out = merged(HAND, new)
    assert delta(HAND, out) == ([], ["\tpersistent = 300\n"])
    assert "\treentry = 15\n\tpersistent = 300\n\n\t# first web server\n" in out
    assert merged(out, OLD) == HAND  # back to the default: the line goes again


def test_adding_a_server_keyword_uses_the_server_indentation():
    out = merged(HAND, edit_server(OLD, "mail", "m1", port=2525))
    assert delta(HAND, out) == ([], ["        port = 2525\n"])
    assert "        weight = 1\n        port = 2525\n    }\n}\n" in out


def test_default_removes_a_keyword_unless_it_is_always_written():
    new = edit_virtual(dataclasses.replace(OLD, nat_router=None), "web", timeout=10)
    out = merged(HAND, new)
    assert delta(HAND, out) == (["nat_router = 10.0.0.254 eth1:1\n", "\ttimeout = 6\n"], ["\ttimeout = 10\n"])
    assert "# the gateway the real servers route through\n" in out


def test_a_default_written_explicitly_stays_until_it_changes():
    assert "    quiesce_server = 0\n" in merged(HAND, edit_virtual(OLD, "mail", timeout=20))
    out = merged(HAND, edit_virtual(OLD, "mail", quiesce_server=True))
    assert delta(HAND, out) == (["    quiesce_server = 0\n"], ["    quiesce_server = 1\n"])


def test_a_keyword_written_twice_keeps_both_until_it_changes_then_one():
    text = HAND.replace("deadtime = 5\n", "deadtime = 5\n# raised later\ndeadtime = 0x9\n")
    old = config_of(text)
    assert old.deadtime == 9
    assert merged(text, bump_serial(old)).count("deadtime") == 2
    out = merged(text, dataclasses.replace(old, deadtime=12))
    assert delta(text, out) == (["deadtime = 5\n", "deadtime = 0x9\n"], ["deadtime = 12\n"])
    assert "# raised later\ndeadtime = 12\n" in out


# --- block edits --------------------------------------------------------------------------
def test_adding_a_server_to_the_second_virtual():
    m2 = RealServer("m2", IP("10.0.0.22"), active=True)
    mail = virtual(OLD, "mail")
    out = merged(HAND, edit_virtual(OLD, "mail", servers=(*mail.servers, m2)))
    block = "\n    server m2 {\n        address = 10.0.0.22\n        active = 1\n        weight = 1\n    }\n"
    removed, added = delta(HAND, out)
    assert removed == [] and Counter(added) == Counter(block.splitlines(keepends=True))
    assert "        weight = 1\n    }\n" + block + "}\n# end of file\n" in out


def test_the_first_server_of_a_virtual_goes_before_its_closing_brace():
    text = "serial_no = 1\n\nvirtual v {\n  active = 1\n  port = 81\n}\n"
    new = edit_virtual(config_of(text), "v", servers=(RealServer("s", IP("10.0.0.1"), weight=4),))
    out = merged(text, new)
    assert out == text[:-2] + "\n  server s {\n    address = 10.0.0.1\n    active = 0\n    weight = 4\n  }\n}\n"


def test_deleting_a_server_removes_its_block_only():
    web = virtual(OLD, "web")
    out = merged(HAND, edit_virtual(OLD, "web", servers=web.servers[1:]))
    removed, added = delta(HAND, out)
    assert added == [] and removed == [
        "\tserver w1 {\n", "\t\taddress = 10.0.0.11\n", "\t\tactive = 1\n", "\t\tweight = 1\n", "\t}\n"]
    assert "\t# first web server\n\tserver w2 {\n" in out


def test_adding_a_virtual_appends_it_after_the_last_one_in_the_file_layout():
    dns = VirtualServer("dns", active=True, address=BoundAddress(IP("192.0.2.12"), "eth0:3"), port=53,
                        protocol="udp", servers=(RealServer("ns1", IP("10.0.0.31"), True),))
    out = merged(HAND, dataclasses.replace(OLD, virtuals=(*OLD.virtuals, dns)))
    removed, added = delta(HAND, out)
    assert removed == [] and added[0] == "\n" and added[1] == "virtual dns {\n"
    assert "\tactive = 1\n" in added and "\tserver ns1 {\n" in added and "\t\taddress = 10.0.0.31\n" in added
    assert out.endswith("\t}\n}\n# end of file\n")


def test_deleting_a_virtual_removes_opener_to_closer():
    out = merged(HAND, dataclasses.replace(OLD, virtuals=OLD.virtuals[1:]))
    removed, added = delta(HAND, out)
    start = HAND.index("virtual web {")
    assert added == [] and "".join(removed) == HAND[start:HAND.index("}\n\nvirtual   mail") + 2]
    assert "# the web site\n\nvirtual   mail {\n" in out


def test_renaming_a_virtual_and_a_server_rewrites_their_openers_only():
    new = edit_server(OLD, "web", "w2", name="web2")
    new = edit_virtual(edit_virtual(new, "web", name="www"), "mail", name="post")
    renames = {("web",): "www", ("web", "w2"): "web2", ("mail",): "post"}
    out = merged(HAND, new, renames=renames)
    assert delta(HAND, out) == (["virtual web {\n", "\tserver w2 {\n", "virtual   mail {\n"],
                                ["virtual www {\n", "\tserver web2 {\n", "virtual post {\n"])
    without = merged(HAND, new)  # the same config, but as blocks removed and added
    assert len(delta(HAND, without)[0]) > 3 and "\t\t# the bigger box\n" not in without


def test_a_rename_wins_over_an_old_block_of_the_new_name():
    web = virtual(OLD, "web")
    new = edit_virtual(OLD, "web", servers=(dataclasses.replace(web.servers[1], name="w1"),))
    out = merged(HAND, new, renames={("web", "w2"): "w1"})
    assert "\t\t# the bigger box\n" in out and "10.0.0.11" not in out


def test_reordered_blocks_are_moved_to_give_the_new_order():
    new = dataclasses.replace(OLD, virtuals=OLD.virtuals[::-1])
    out = merged(HAND, new)
    assert Counter(comments(out)) == Counter(comments(HAND))
    assert out.index("virtual   mail {") < out.index("virtual web {")


def test_failover_blocks_are_merged_too():
    text = "service = fos\n\n# ftp\nfailover ftp {\n  active = 1\n  port = 21\n}\n"
    old = config_of(text)
    web = FailoverService("web", address=BoundAddress(IP("192.0.2.7"), "eth0:1"))
    new = dataclasses.replace(old, failovers=(dataclasses.replace(old.failovers[0], port=2121), web))
    out = merged(text, new)
    assert out == text.replace("port = 21\n", "port = 2121\n") + (
        "\nfailover web {\n  active = 0\n  address = 192.0.2.7 eth0:1\n  port = 80\n  timeout = 10\n"
        "  reentry = 180\n}\n")


# --- global scope -------------------------------------------------------------------------
def test_global_changes_between_comments():
    new = dataclasses.replace(OLD, network="direct", nat_router=None, backup_active=True, backup=IP("192.0.2.3"),
                              primary_private=IP("10.1.0.2"))
    out = merged(HAND, new)
    assert delta(HAND, out) == (
        ["backup_active = 0\n", "backup = 0.0.0.0\n", "network = nat\n", "nat_router = 10.0.0.254 eth1:1\n"],
        ["backup_active = 1\n", "backup = 192.0.2.3\n", "network = direct\n", "primary_private = 10.1.0.2\n"])
    assert comments(out) == comments(HAND)
    assert "debug_level = NONE\nprimary_private = 10.1.0.2\n\n# the web site\n" in out


def test_a_new_global_goes_after_the_leading_comments_when_no_global_precedes_the_blocks():
    text = "# head\n# more\n\nvirtual v {\n\tactive = 1\n}\nprimary = 192.0.2.2\n"
    out = merged(text, dataclasses.replace(config_of(text), serial_no=5, primary=IP("192.0.2.9")))
    assert out == "# head\n# more\nserial_no = 5\n\nvirtual v {\n\tactive = 1\n}\nprimary = 192.0.2.9\n"


# --- line breaks ----------------------------------------------------------------------------
def test_crlf_stays_crlf():
    text = HAND.replace("\n", "\r\n")
    mail = virtual(OLD, "mail")
    new = edit_virtual(OLD, "mail", scheduler="sh", persistent=60,
                       servers=(*mail.servers, RealServer("m2", IP("10.0.0.22"))))
    out = merged(text, new)
    assert "\n" not in out.replace("\r\n", "") and out.endswith("# end of file\r\n")
    assert len(delta(text, out)[0]) == 1


def test_a_missing_final_line_break_stays_missing():
    text = HAND.removesuffix("# end of file\n").rstrip("\n")
    dns = VirtualServer("dns", address=BoundAddress(IP("192.0.2.12"), "eth0:3"))
    out = merged(text, dataclasses.replace(config_of(text), virtuals=(*OLD.virtuals, dns)))
    assert out.endswith("\n}") and out.startswith(text + "\n\nvirtual dns {\n")
    assert merged(text, bump_serial(config_of(text))).endswith("    }\n}")


# --- errors and helpers -------------------------------------------------------------------
def test_text_that_does_not_parse_and_bad_renames_are_refused():
    with pytest.raises(ValueError, match="does not parse"):
        merge("keepalive = 2 # seconds\n", Config(), resolver=RESOLVER)
    with pytest.raises(ValueError, match="renames"):
        merge(HAND, OLD, renames={(): "x"}, resolver=RESOLVER)


@pytest.mark.parametrize("new", [
    edit_virtual(OLD, "web", send="both \" and ' quotes"),
    edit_server(OLD, "web", "w1", manual=True),
])
def test_what_lvs_cf_cannot_hold_is_refused(new):
    with pytest.raises(UnrepresentableError):
        merge(HAND, new, resolver=RESOLVER)


def test_bump_serial_and_line_diff():
    new = bump_serial(OLD)
    assert new.serial_no == 8 and new.virtuals == OLD.virtuals
    diff = line_diff(HAND, merged(HAND, new), "lvs.cf")
    assert diff.startswith("--- lvs.cf\tcurrent\n+++ lvs.cf\tnew\n@@ ")
    assert "\n-serial_no = 7\n+serial_no = 8\n" in diff
    assert line_diff(HAND, HAND) == ""


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_merging_the_same_config_is_the_identity_on_the_examples(path):
    text = path.read_text()
    assert merge(text, config_of(text), resolver=RESOLVER) == text


# --- property: random edits -----------------------------------------------------------------
SEEDS = [
    HAND,
    HAND.replace("\n", "\r\n"),
    HAND.rstrip("\n"),
    lvs_cf(kind="nat", rips=["10.0.0.11", "10.0.0.12"], backup=True,
           services=(Service(), Service(name="dns", port=53, protocol="udp", persistent=60))),
    *(p.read_text() for p in EXAMPLES if p.name in ("lvs.cf.nat-wlc", "lvs.cf.primary-backup", "lvs.cf.udp-dns")),
]
NAMES = ["a", "b", "web", "w1", "w2", "m1", "www", "rs1"]
VIRTUAL_VALUES = {
    "port": st.integers(0, 65535), "scheduler": st.sampled_from(SCHEDULERS), "persistent": st.integers(0, 3),
    "timeout": st.integers(1, 12), "reentry": st.integers(0, 200), "quiesce_server": st.booleans(),
    "fwmark": st.integers(0, 3), "protocol": st.sampled_from(["tcp", "udp"]),
}
SERVER_VALUES = {"weight": st.integers(0, 3), "port": st.none() | st.integers(1, 65535), "active": st.booleans()}
GLOBAL_VALUES = {
    "keepalive": st.sampled_from([1, 2, 0.5, 3]), "deadtime": st.sampled_from([5, 6, 10, 2.5]),
    "network": st.sampled_from(NETWORKS), "heartbeat_port": st.integers(1, 65535),
}


def kept_comments(text: str, alive: set[tuple[str, ...]]) -> Counter[str]:
    """Comment lines whose enclosing blocks (by old path) are all still there."""
    path: list[str] = []
    out: Counter[str] = Counter()
    for line in text.splitlines():
        toks = tokenize(line)
        if not toks and line.lstrip().startswith("#"):
            if all(tuple(path[:k]) in alive for k in range(1, len(path) + 1)):
                out[line] += 1
        elif toks and toks[0].bare("}"):
            path.pop()
        elif toks and toks[0].text in ("virtual", "server"):
            path.append(toks[1].text)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), data=st.data())
def test_random_edits_round_trip_and_keep_comments(seed, data):
    old = config_of(seed)
    assert merge(seed, old, resolver=RESOLVER) == seed
    # Each virtual and server carries its old name (None: new) so renames can be derived.
    virtuals = [[v.name, v, [s.name for s in v.servers]] for v in old.virtuals]
    glob = old
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["global", "virtual", "server", "add server", "delete server",
                                        "rename server", "add virtual", "delete virtual", "rename virtual"]))
        entry = data.draw(st.sampled_from(virtuals)) if virtuals else None
        v = entry[1] if entry else None
        free_server = [n for n in NAMES if v and n not in {s.name for s in v.servers}]
        if op == "global":
            key = data.draw(st.sampled_from(sorted(GLOBAL_VALUES)))
            glob = dataclasses.replace(glob, **{key: data.draw(GLOBAL_VALUES[key])})
        elif op == "add virtual":
            name = data.draw(st.sampled_from([n for n in NAMES if n not in {e[1].name for e in virtuals}]))
            fresh = VirtualServer(name, active=True, address=BoundAddress(IP("192.0.2.99"), "eth0:9"),
                                  servers=(RealServer("x", IP("10.0.0.99"), True),))
            virtuals.append([None, fresh, [None]])
        elif v is None:
            continue
        elif op == "virtual":
            key = data.draw(st.sampled_from(sorted(VIRTUAL_VALUES)))
            entry[1] = dataclasses.replace(v, **{key: data.draw(VIRTUAL_VALUES[key])})
        elif op == "delete virtual":
            virtuals.remove(entry)
        elif op == "rename virtual":
            name = data.draw(st.sampled_from([n for n in NAMES if n not in {e[1].name for e in virtuals}]))
            entry[1] = dataclasses.replace(v, name=name)
        elif op == "add server":
            server = RealServer(data.draw(st.sampled_from(free_server)), IP("10.0.0.98"), weight=2)
            entry[1] = dataclasses.replace(v, servers=(*v.servers, server))
            entry[2].append(None)
        elif v.servers:
            k = data.draw(st.integers(0, len(v.servers) - 1))
            servers = list(v.servers)
            if op == "server":
                key = data.draw(st.sampled_from(sorted(SERVER_VALUES)))
                servers[k] = dataclasses.replace(servers[k], **{key: data.draw(SERVER_VALUES[key])})
            elif op == "delete server":
                del servers[k]
                del entry[2][k]
            else:
                servers[k] = dataclasses.replace(servers[k], name=data.draw(st.sampled_from(free_server)))
            entry[1] = dataclasses.replace(v, servers=tuple(servers))
    new = dataclasses.replace(glob, virtuals=tuple(e[1] for e in virtuals))
    renames: dict[tuple[str, ...], str] = {}
    alive: set[tuple[str, ...]] = set()
    for vold, v, sold in virtuals:
        if vold is None:
            continue
        alive.add((vold,))
        if v.name != vold:
            renames[(vold,)] = v.name
        for s_old, s in zip(sold, v.servers, strict=True):
            if s_old is not None:
                alive.add((vold, s_old))
                if s.name != s_old:
                    renames[(vold, s_old)] = s.name
    out = merged(seed, new, renames=renames)
    assert not kept_comments(seed, alive) - Counter(line for line in out.splitlines())
    assert ("\r\n" in out) == ("\r\n" in seed) and out.endswith("\n") == seed.endswith("\n")
