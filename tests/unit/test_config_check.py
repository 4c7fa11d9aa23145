"""Semantic checks: each finding with its grade and line; adjusted(); load()."""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

import pytest

from pylvs.config import ConfigError, dump
from pylvs.config.check import adjusted, check, check_text, is_contiguous_mask, load
from pylvs.config.diagnostics import (
    EXIT_CONFIG_ADJUSTED,
    EXIT_CONFIG_ERROR,
    EXIT_OK,
    Severity,
)
from pylvs.config.model import BoundAddress, Config, RealServer, VirtualServer
from pylvs.config.parse import StaticResolver

RESOLVER = StaticResolver()
E, A, W = Severity.ERROR, Severity.ADJUSTED, Severity.WARNING

HEAD = """\
primary = 192.0.2.2
service = lvs
network = direct
"""
WEB = """\
virtual web {
     active = 1
     address = 192.0.2.10 eth0:1
     port = 80
     server a {
         address = 192.0.2.21
         active = 1
     }
}
"""
BASE = HEAD + WEB  # lines: 1-3 globals, 4 virtual, 5 active, 6 address, 7 port, 8 server


def run(text: str):
    return check_text(text, "t.cf", RESOLVER)


def found(text: str, severity: Severity, fragment: str) -> list[int]:
    """Lines of diagnostics of `severity` whose message contains `fragment`."""
    result = run(text)
    return [d.line for d in result.diagnostics if d.severity is severity and fragment in d.message]


def test_base_is_clean():
    result = run(BASE)
    assert result.diagnostics == () and result.exit_code == EXIT_OK


def test_reference_example_is_clean(tmp_path):
    text = (HEAD.replace("direct", "nat") + "nat_router = 10.0.0.254 eth1:1\n"
            + WEB.replace("192.0.2.21", "10.0.0.21"))
    assert run(text).diagnostics == ()


# --- global section -----------------------------------------------------------------------
def test_service_fos_is_an_error():
    text = HEAD.replace("service = lvs", "service = fos") + "failover f {\n active = 1\n}\n"
    assert found(text, E, "service = fos") == [2]
    assert run(text).exit_code == EXIT_CONFIG_ERROR


def test_primary_unset():
    assert found(BASE.replace("primary = 192.0.2.2\n", ""), E, "primary is not set") == [0]


def test_no_active_virtual():
    assert found(BASE.replace("active = 1\n     address", "active = 0\n     address"), E,
                 "no active lvs services defined") == [0]


def test_backup_active_without_backup_is_adjusted():
    text = HEAD + "backup_active = 1\n" + WEB
    assert found(text, A, "backup_active = 0") == [4]
    result = run(text)
    assert result.exit_code == EXIT_CONFIG_ADJUSTED
    assert adjusted(result.config).backup_active is False


def test_backup_equal_to_primary():
    text = HEAD + "backup_active = 1\nbackup = 192.0.2.2\n" + WEB
    assert found(text, E, "same address as primary") == [5]


def test_heartbeat_zero_warns_only_with_backup():
    text = HEAD + "backup_active = 1\nbackup = 192.0.2.3\nheartbeat = 0\n" + WEB
    assert found(text, W, "heartbeat = 0 does not turn heartbeats off") == [6]
    assert found(HEAD + "heartbeat = 0\n" + WEB, W, "heartbeat") == []


def test_one_private_address_only():
    text = HEAD + "backup_active = 1\nbackup = 192.0.2.3\nprimary_private = 10.9.9.2\n" + WEB
    assert found(text, W, "backup's public address") == [6]


def test_keepalive_not_below_deadtime():
    assert found(HEAD + "keepalive = 5\ndeadtime = 5\n" + WEB, W, "flap") == [5]
    assert found(HEAD + "keepalive = 0\n" + WEB, E, "keepalive = 0") == [4]
    assert found(HEAD + "deadtime = -1\n" + WEB, E, "deadtime = -1") == [4]


def test_heartbeat_port_range():
    assert found(HEAD + "heartbeat_port = 70000\n" + WEB, E, "heartbeat_port") == [4]


def test_nat_router_with_direct_routing():
    assert found(HEAD + "nat_router = 10.0.0.254 eth1:1\n" + WEB, W, "only used with network = nat") == [4]


def test_nat_without_nat_router():
    text = BASE.replace("network = direct", "network = nat")
    assert found(text, W, "route back") == [3]


def test_non_contiguous_nat_nmask():
    assert found(HEAD + "nat_nmask = 255.0.255.0\n" + WEB, E, "contiguous") == [4]


def test_syncd_id_out_of_range_is_adjusted():
    text = HEAD + "syncd_id = 300\n" + WEB
    assert found(text, A, "uses 44") == [4]
    assert adjusted(run(text).config).syncd_id == 44


def test_negative_ipvs_timeout():
    assert found(HEAD + "udp_timeout = -1\n" + WEB, E, "udp_timeout") == [4]


def test_failover_block_ignored_in_lvs_mode():
    text = HEAD + "failover f {\n}\n"
    assert found(text, W, 'failover "f" is ignored') == [4]


# --- virtual blocks ------------------------------------------------------------------------
def second(virtual_body_changes: str = "", name: str = "other") -> str:
    """A second virtual block (starting at line 13 after BASE)."""
    return (f"virtual {name} {{\n     active = 1\n     address = 192.0.2.11 eth0:2\n"
            f"{virtual_body_changes}"
            "     server b {\n         address = 192.0.2.22\n         active = 1\n     }\n}\n")


def test_duplicate_service_same_vip_port_protocol():
    text = BASE + second().replace("192.0.2.11 eth0:2", "192.0.2.10 eth0:1")
    assert found(text, E, 'same service (tcp 192.0.2.10:80) as virtual "web" at line 4') == [13]


def test_duplicate_service_inactive_is_a_warning():
    text = BASE + second().replace("192.0.2.11 eth0:2", "192.0.2.10 eth0:1").replace(
        "active = 1\n     address", "active = 0\n     address")
    assert found(text, W, "same service") == [13]
    assert found(text, E, "same service") == []


def test_same_vip_other_protocol_is_fine():
    text = BASE + second("     protocol = udp\n     send_program = \"/bin/echo up\"\n     expect = up\n").replace(
        "192.0.2.11 eth0:2", "192.0.2.10 eth0:1")
    assert run(text).diagnostics == ()


def test_duplicate_fwmark():
    text = (BASE.replace("     port = 80\n", "     port = 80\n     fwmark = 5\n     persistent = 60\n")
            + second("     fwmark = 5\n     persistent = 60\n"))
    assert found(text, E, "firewall mark 5") == [15]


def test_duplicate_virtual_name():
    assert found(BASE + second(name="web"), E, 'virtual "web" is defined twice') == [13]


def test_active_virtual_without_address():
    text = BASE.replace("     address = 192.0.2.10 eth0:1\n", "")
    assert found(text, E, "no address = IP DEV") == [4]


def test_fwmark_without_persistence_warns():
    text = BASE.replace("     port = 80\n", "     port = 80\n     fwmark = 80\n")
    assert found(text, W, "without persistent") == [8]
    assert [d for d in run(text).diagnostics if d.severity is E] == []


def test_fwmark_range():
    text = BASE.replace("     port = 80\n", "     port = 80\n     fwmark = -1\n")
    assert found(text, E, "fwmark -1 is out of range") == [8]


def test_pmask_not_contiguous_and_without_persistence():
    text = BASE.replace("     port = 80\n", "     port = 80\n     persistent = 60\n     pmask = 255.255.0.255\n")
    assert found(text, E, "pmask 255.255.0.255 is not a contiguous") == [9]
    text = BASE.replace("     port = 80\n", "     port = 80\n     pmask = 255.255.255.0\n")
    assert found(text, W, "pmask has no effect") == [8]


def test_persistent_range():
    text = BASE.replace("     port = 80\n", "     port = 80\n     persistent = -5\n")
    assert found(text, E, "persistent = -5") == [8]
    text = BASE.replace("     port = 80\n", "     port = 80\n     persistent = 2678401\n")
    assert found(text, E, "persistent = 2678401") == [8]


def test_zero_port_needs_persistence_or_fwmark():
    text = BASE.replace("port = 80", "port = 0")
    assert found(text, E, "Zero port specified for non-persistent service") == [7]
    text = BASE.replace("port = 80", "port = 0\n     persistent = 60")
    assert found(text, E, "Zero port") == []


def test_port_out_of_range():
    assert found(BASE.replace("port = 80", "port = 65536"), E, "port 65536") == [7]


def test_timeout_zero_and_negative_reentry():
    text = BASE.replace("     port = 80\n", "     port = 80\n     timeout = 0\n     reentry = -1\n")
    assert found(text, E, "timeout = 0") == [8]
    assert found(text, E, "reentry = -1") == [9]


def test_sorry_server_equal_to_vip():
    text = BASE.replace("     port = 80\n", "     port = 80\n     sorry_server = 192.0.2.10\n")
    assert found(text, E, "sorry_server 192.0.2.10 is a virtual IP") == [8]


def test_send_with_send_program():
    text = BASE.replace("     port = 80\n", "     port = 80\n     send = x\n     send_program = /bin/true\n")
    assert found(text, W, "send is ignored") == [8]


def test_use_regex_without_expect():
    text = BASE.replace("     port = 80\n", "     port = 80\n     use_regex = 1\n")
    assert found(text, W, "use_regex = 1 has no effect") == [8]


def test_udp_without_send_never_passes():
    text = BASE.replace("     port = 80\n", "     port = 53\n     protocol = udp\n")
    assert found(text, W, "never marked up") == [8]
    text = BASE.replace("     port = 80\n", "     port = 53\n     protocol = udp\n     send = ping\n")
    assert found(text, W, "never marked up") == []


def test_start_cmd_in_virtual():
    text = BASE.replace("     port = 80\n", "     port = 80\n     start_cmd = /bin/true\n")
    assert found(text, W, "start_cmd only has an effect in failover") == [8]


def test_vip_on_two_aliases_and_two_vips_on_one_alias():
    text = BASE + second("     port = 443\n").replace("192.0.2.11 eth0:2", "192.0.2.10 eth0:2")
    assert found(text, W, "a VIP should live on one interface alias") == [15]
    text = BASE + second().replace("192.0.2.11 eth0:2", "192.0.2.11 eth0:1")
    assert found(text, W, "one alias holds one address") == [15]


# --- real servers ----------------------------------------------------------------------------
def server(body: str, name: str = "z") -> str:
    """BASE with one more server block (starting at line 12) in virtual web."""
    return BASE.replace("     }\n}\n", f"     }}\n     server {name} {{\n{body}     }}\n}}\n")


def test_weight_out_of_range():
    """ipvsadm 1.31 and the kernel take weights 0..2147483647 (INT_MAX)."""
    text = server("         address = 192.0.2.23\n         active = 1\n         weight = 2147483648\n")
    assert found(text, E, "illegal weight specified (2147483648; 0-2147483647") == [15]
    text = server("         address = 192.0.2.23\n         active = 1\n         weight = -1\n")
    assert found(text, E, "illegal weight specified (-1") == [15]
    for ok in (65536, 2147483647):
        text = server(f"         address = 192.0.2.23\n         active = 1\n         weight = {ok}\n")
        assert found(text, E, "weight") == []


def _with(config: Config, sched_flags: int = 0, **server_fields) -> Config:
    """`config` with its first virtual's first server (and the virtual) changed as pylvsadm does."""
    v = config.virtuals[0]
    s = replace(v.servers[0], **server_fields)
    return replace(config, virtuals=(replace(v, servers=(s, *v.servers[1:]), sched_flags=sched_flags),))


def _messages(config: Config, severity: Severity) -> list[str]:
    return [d.message for d in check(config) if d.severity is severity]


def test_pylvsadm_fields_are_checked():
    base = run(BASE).config
    assert _messages(_with(base, forward="nat", u_threshold=10, l_threshold=5, sched_flags=3), E) == []
    assert any("unknown forwarding method 'gre'" in m for m in _messages(_with(base, forward="gre"), E))
    assert any("illegal u_threshold specified (-1" in m for m in _messages(_with(base, u_threshold=-1), E))
    assert any("illegal l_threshold specified (2147483648" in m
               for m in _messages(_with(base, u_threshold=2**31 - 1, l_threshold=2**31), E))
    assert any("lower threshold 5 is higher than upper threshold 0" in m
               for m in _messages(_with(base, l_threshold=5), E))
    assert any("scheduler flags 0x8 are out of range" in m for m in _messages(_with(base, sched_flags=8), E))


def test_port_forcing_follows_the_servers_own_method():
    """network = direct forces the virtual port, but a server pylvsadm added with -m keeps its own."""
    base = run(server("         address = 192.0.2.23\n         active = 1\n         port = 8080\n")).config
    assert any("port 8080 is ignored with network = direct" in m for m in _messages(base, W))
    v = base.virtuals[0]
    nat = replace(base, virtuals=(replace(v, servers=(v.servers[0], replace(v.servers[1], forward="nat"))),))
    assert not any("is ignored" in m for m in _messages(nat, W))
    # Two servers on one address differ by port only under NAT: under DR both are RIP:80.
    twice = replace(v.servers[1], name="y", address=v.servers[0].address)
    dup = replace(base, virtuals=(replace(v, servers=(v.servers[0], twice)),))
    assert any("same destination 192.0.2.21:80" in m for m in _messages(dup, E))
    apart = replace(base, virtuals=(replace(v, servers=(v.servers[0], replace(twice, forward="nat"))),))
    assert not any("same destination" in m for m in _messages(apart, E))


def test_manual_virtual_alias_is_not_checked():
    """An ipvsadm-added service has no address brought up: no alias warnings about it."""
    base = run(BASE).config
    v = base.virtuals[0]
    other = replace(v, name="m", port=443, address=BoundAddress(IPv4Address("192.0.2.99"), ""), manual=True)
    assert not any("alias" in m for m in _messages(replace(base, virtuals=(v, other)), W))


def test_real_server_equal_to_vip():
    text = server("         address = 192.0.2.10\n         active = 1\n")
    assert found(text, E, "address 192.0.2.10 is a virtual IP") == [13]


def test_duplicate_real_server_destination():
    text = server("         address = 192.0.2.21\n         active = 1\n")
    assert found(text, E, "Destination already exists") == [12]


def test_same_address_other_port_is_a_duplicate_only_for_dr():
    body = "         address = 192.0.2.21\n         active = 1\n         port = 8080\n"
    assert found(server(body), E, "Destination already exists") == [12]  # direct: port forced
    nat = server(body).replace("network = direct", "network = nat\nnat_router = 10.0.0.254 eth1:1")
    assert found(nat, E, "Destination already exists") == []


def test_server_port_ignored_with_direct_routing():
    text = server("         address = 192.0.2.23\n         active = 1\n         port = 8080\n")
    assert found(text, W, "port 8080 is ignored with network = direct") == [15]


def test_duplicate_server_name():
    text = server("         address = 192.0.2.23\n         active = 1\n", name="a")
    assert found(text, E, 'server "a" is defined twice') == [12]


def test_active_server_without_address():
    assert found(server("         active = 1\n"), E, "has no address") == [12]


def test_no_active_real_server():
    text = BASE.replace("         active = 1\n", "         active = 0\n")
    assert found(text, W, "no active real server: every connection") == [4]
    text = text.replace("     port = 80\n", "     port = 80\n     sorry_server = 192.0.2.99\n")
    assert found(text, W, "only the sorry_server 192.0.2.99 will answer") == [4]


# --- programmatic configs ----------------------------------------------------------------------
def test_unrepresentable_string_is_an_error():
    c = Config(primary=IPv4Address("192.0.2.2"), network="direct", active_cmd="a\"b' c",
               virtuals=(VirtualServer("v", active=True, address=BoundAddress(IPv4Address("192.0.2.10"), "eth0"),
                                       servers=(RealServer("s", IPv4Address("192.0.2.21"), True),)),))
    (d,) = check(c)
    assert d.severity is E and "both quote kinds" in d.message
    c2 = Config(primary=IPv4Address("192.0.2.2"), network="direct",
                virtuals=(VirtualServer("v\nx", active=True,
                                        address=BoundAddress(IPv4Address("192.0.2.10"), "eth0"),
                                        servers=(RealServer("s", IPv4Address("192.0.2.21"), True),)),))
    assert any("line break" in d.message for d in check(c2))


def test_programmatic_enum_values_are_checked():
    c = Config(primary=IPv4Address("192.0.2.2"), network="direct",
               virtuals=(VirtualServer("v", active=True, scheduler="fifo",
                                       address=BoundAddress(IPv4Address("192.0.2.10"), "eth0"),
                                       servers=(RealServer("s", IPv4Address("192.0.2.21"), True),)),))
    (d,) = check(c)
    assert d.severity is E and d.message.startswith("invalid argument 'fifo' for scheduler")


def test_is_contiguous_mask():
    for good in ("0.0.0.0", "255.0.0.0", "255.255.255.128", "255.255.255.255"):
        assert is_contiguous_mask(IPv4Address(good))
    for bad in ("0.0.0.255", "255.0.255.0", "255.255.255.253"):
        assert not is_contiguous_mask(IPv4Address(bad))


def test_diagnostics_are_sorted_by_line():
    text = HEAD + "keepalive = 0\nudp_timeout = -1\n" + WEB.replace("port = 80", "port = 65536")
    lines = [d.line for d in run(text).diagnostics]
    assert lines == sorted(lines)


# --- load() ---------------------------------------------------------------------------------
def test_load_returns_checked_config(tmp_path):
    path = tmp_path / "lvs.cf"
    path.write_text(BASE)
    config = load(str(path), RESOLVER)
    assert config.virtuals[0].servers[0].address == IPv4Address("192.0.2.21")


def test_load_raises_with_every_error(tmp_path):
    path = tmp_path / "lvs.cf"
    path.write_text(BASE.replace("port = 80", "port = x80") + "bogus = 1\n")
    with pytest.raises(ConfigError) as info:
        load(str(path), RESOLVER)
    messages = [d.message for d in info.value.diagnostics if d.severity is E]
    assert len(messages) == 2 and str(info.value).startswith(f"{path}:7: error: invalid argument")


def test_load_applies_adjustments(tmp_path):
    path = tmp_path / "lvs.cf"
    path.write_text(HEAD + "backup_active = 1\n" + WEB)
    assert load(str(path), RESOLVER).backup_active is False
    assert load(str(path), RESOLVER, adjust=False).backup_active is True


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(str(tmp_path / "missing.cf"))
    assert "I/O error while reading configuration" in str(info.value)


def test_dump_of_checked_file_checks_clean():
    result = run(BASE)
    assert run(dump(result.config)).diagnostics == ()


def test_use_regex_with_an_invalid_regex_is_an_error():
    text = BASE.replace("     port = 80\n", '     port = 80\n     use_regex = 1\n     expect = "HTTP/1\\.(0"\n')
    assert found(text, E, "not a valid extended regular expression") == [9]
    ok = BASE.replace("     port = 80\n", '     port = 80\n     use_regex = 1\n     expect = "HTTP/1\\.[01] 200"\n')
    assert found(ok, E, "regular expression") == []


def test_send_program_without_expect_warns():
    text = BASE.replace("     port = 80\n", '     port = 80\n     send_program = "/bin/echo %h"\n')
    assert found(text, W, "send_program without expect") == [8]
