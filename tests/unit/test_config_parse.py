"""lvs.cf grammar: keywords and defaults (reference 1.2-1.5), parser errors (1.1), quirks."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pylvs.config import diagnostics as dg
from pylvs.config.diagnostics import Severity
from pylvs.config.model import KEYWORDS, BoundAddress, Kind, Scope
from pylvs.config.parse import (
    LineError,
    StaticResolver,
    parse,
    parse_c_int,
    parse_file,
    tokenize,
)

RESOLVER = StaticResolver(hosts={"lvs1.example.net": "192.0.2.2", "web1.example.net": "10.0.0.11"},
                          ports={"http": 80, "https": 443, "ftp": 21})
IP = IPv4Address
ANY = IP("0.0.0.0")


def p(text: str):
    return parse(text, "t.cf", RESOLVER)


def errors(result):
    return [d for d in result.diagnostics if d.severity is Severity.ERROR]


def warnings(result):
    return [d for d in result.diagnostics if d.severity is Severity.WARNING]


# --- every keyword of reference 1.2-1.5 with its default ------------------------------
# Copied by hand from spec/lvs-reference.md (not from the code), as Python values.
REFERENCE_GLOBAL = {
    "serial_no": 0, "service": "lvs", "primary": ANY, "primary_private": None,
    "primary_shared": None, "backup": ANY, "backup_active": False, "backup_private": None,
    "backup_shared": None, "heartbeat": False, "heartbeat_port": 539, "keepalive": 2,
    "deadtime": 5, "network": "nat", "nat_router": None, "nat_nmask": ANY,
    "reservation_conflict_action": None, "debug_level": "NONE", "rsh_command": "rsh",
    "sync": False, "ipvsadm": "/sbin/ipvsadm", "active_cmd": None, "inactive_cmd": None,
    "monitor_links": 0, "syncdaemon": False, "syncd_iface": "eth0", "syncd_id": 0,
    "tcp_timeout": 0, "tcpfin_timeout": 0, "udp_timeout": 0, "hard_shutdown": True,
}
# pylvs's own global keywords (HA extensions, docs/ha.md): not in piranha, so not in the
# reference; listed here so a new keyword is still a deliberate change of this test.
EXTENSIONS_GLOBAL = {
    "syncd_port": 8848, "syncd_unicast": False, "garp_count": 5, "garp_interval": 1,
    "garp_refresh": 10, "config_sync": False, "config_sync_secret": None,
    "config_sync_port": 539, "config_sync_interval": 10,
}
REFERENCE_VIRTUAL = {
    "active": False, "address": None, "vip_nmask": ANY, "port": 80, "protocol": "tcp",
    "fwmark": 0, "scheduler": "wlc", "persistent": 0, "pmask": ANY, "send": None,
    "expect": None, "use_regex": False, "send_program": None, "load_monitor": None,
    "timeout": 10, "reentry": 180, "quiesce_server": False, "sorry_server": None,
    "client_monitor": "/usr/sbin/nanny", "master": None, "dirs": (), "start_cmd": None,
    "stop_cmd": None,
}
REFERENCE_SERVER = {"address": None, "active": False, "weight": 1, "port": None}
REFERENCE_FAILOVER = {
    "active": False, "address": None, "vip_nmask": ANY, "port": 80, "send": None,
    "expect": None, "timeout": 10, "reentry": 180, "start_cmd": None, "stop_cmd": None,
}
REFERENCE_BLOCKS = {Scope.GLOBAL: {"virtual", "failover"}, Scope.VIRTUAL: {"server"}}


@pytest.mark.parametrize("scope,reference", [
    (Scope.GLOBAL, REFERENCE_GLOBAL | EXTENSIONS_GLOBAL), (Scope.VIRTUAL, REFERENCE_VIRTUAL),
    (Scope.SERVER, REFERENCE_SERVER), (Scope.FAILOVER, REFERENCE_FAILOVER),
])
def test_keyword_table_matches_reference(scope, reference):
    names = {k.name for k in KEYWORDS if k.scope is scope and k.kind is not Kind.BLOCK}
    blocks = {k.name for k in KEYWORDS if k.scope is scope and k.kind is Kind.BLOCK}
    assert names == set(reference)
    assert blocks == REFERENCE_BLOCKS.get(scope, set())
    for k in KEYWORDS:
        if k.scope is scope and k.kind is not Kind.BLOCK:
            assert k.default == reference[k.name], k.name


def test_every_keyword_absent_gives_reference_default():
    result = p("virtual v {\n active = 1\n server s {\n }\n}\n")
    assert not result.diagnostics
    c = result.config
    for name, value in REFERENCE_GLOBAL.items():
        assert getattr(c, name) == value, name
    v = c.virtuals[0]
    for name, value in REFERENCE_VIRTUAL.items():
        expected = True if name == "active" else value
        assert getattr(v, name) == expected, name
    for name, value in REFERENCE_SERVER.items():
        assert getattr(v.servers[0], name) == value, name
    assert v.server_port(v.servers[0]) == 80  # unset server port = the virtual's
    f = p("service = fos\nfailover f {\n}\n").config.failovers[0]
    for name, value in REFERENCE_FAILOVER.items():
        assert getattr(f, name) == value, name


# One non-default value per keyword, written as lvs.cf text -> expected Python value.
GLOBAL_SAMPLES = {
    "serial_no": ("12", 12), "service": ("fos", "fos"), "primary": ("192.0.2.2", IP("192.0.2.2")),
    "primary_private": ("10.9.9.2", IP("10.9.9.2")), "primary_shared": ("/dev/sda1", "/dev/sda1"),
    "backup": ("192.0.2.3", IP("192.0.2.3")), "backup_active": ("1", True),
    "backup_private": ("10.9.9.3", IP("10.9.9.3")), "backup_shared": ("/dev/sdb1", "/dev/sdb1"),
    "heartbeat": ("1", True), "heartbeat_port": ("1539", 1539), "keepalive": ("3", 3),
    "deadtime": ("12", 12), "network": ("tunnel", "tunnel"),
    "nat_router": ("10.0.0.254 eth1:1", BoundAddress(IP("10.0.0.254"), "eth1:1")),
    "nat_nmask": ("255.255.255.0", IP("255.255.255.0")),
    "reservation_conflict_action": ("preempt", "preempt"), "debug_level": ("LOW", "LOW"),
    "rsh_command": ("ssh", "ssh"), "sync": ("1", True), "ipvsadm": ("/usr/sbin/ipvsadm", "/usr/sbin/ipvsadm"),
    "active_cmd": ('"/usr/local/bin/up now"', "/usr/local/bin/up now"),
    "inactive_cmd": ("/usr/local/bin/down", "/usr/local/bin/down"), "monitor_links": ("1", 1),
    "syncdaemon": ("1", True), "syncd_iface": ("eth2", "eth2"), "syncd_id": ("7", 7),
    "syncd_port": ("8849", 8849), "syncd_unicast": ("1", True), "garp_count": ("3", 3),
    "garp_interval": ("0.5", 0.5), "garp_refresh": ("30", 30), "config_sync": ("1", True),
    "config_sync_secret": ("/etc/sysconfig/ha/sync.key", "/etc/sysconfig/ha/sync.key"),
    "config_sync_port": ("5390", 5390), "config_sync_interval": ("2.5", 2.5),
    "tcp_timeout": ("900", 900), "tcpfin_timeout": ("120", 120), "udp_timeout": ("300", 300),
    "hard_shutdown": ("0", False),
}
VIRTUAL_SAMPLES = {
    "active": ("1", True), "address": ("192.0.2.10 eth0:1", BoundAddress(IP("192.0.2.10"), "eth0:1")),
    "vip_nmask": ("255.255.255.0", IP("255.255.255.0")), "port": ("https", 443),
    "protocol": ("udp", "udp"), "fwmark": ("0x50", 80), "scheduler": ("lblcr", "lblcr"),
    "persistent": ("300", 300), "pmask": ("255.255.0.0", IP("255.255.0.0")),
    "send": ('"GET / HTTP/1.0\\r\\n\\r\\n"', "GET / HTTP/1.0\\r\\n\\r\\n"),
    "expect": ("'HTTP/1.1 200 OK'", "HTTP/1.1 200 OK"), "use_regex": ("1", True),
    "send_program": ('"/bin/check %h %p"', "/bin/check %h %p"), "load_monitor": ("uptime", "uptime"),
    "timeout": ("6", 6), "reentry": ("15", 15), "quiesce_server": ("1", True),
    "sorry_server": ("10.0.0.200", IP("10.0.0.200")), "client_monitor": ("/usr/sbin/nanny2", "/usr/sbin/nanny2"),
    "master": ("lvs1.example.net", IP("192.0.2.2")), "dirs": ("[ /etc /var/www ]", ("/etc", "/var/www")),
    "start_cmd": ("/bin/start", "/bin/start"), "stop_cmd": ("/bin/stop", "/bin/stop"),
}
SERVER_SAMPLES = {"address": ("web1.example.net", IP("10.0.0.11")), "active": ("1", True),
                  "weight": ("3", 3), "port": ("8080", 8080)}
FAILOVER_SAMPLES = {
    "active": ("1", True), "address": ("192.0.2.10 eth0:1", BoundAddress(IP("192.0.2.10"), "eth0:1")),
    "vip_nmask": ("255.255.255.0", IP("255.255.255.0")), "port": ("ftp", 21),
    "send": ('"quit"', "quit"), "expect": ("220", "220"), "timeout": ("6", 6), "reentry": ("15", 15),
    "start_cmd": ('"/etc/init.d/ftp start"', "/etc/init.d/ftp start"),
    "stop_cmd": ('"/etc/init.d/ftp stop"', "/etc/init.d/ftp stop"),
}


def test_samples_cover_every_keyword():
    for scope, samples in [(Scope.GLOBAL, GLOBAL_SAMPLES), (Scope.VIRTUAL, VIRTUAL_SAMPLES),
                           (Scope.SERVER, SERVER_SAMPLES), (Scope.FAILOVER, FAILOVER_SAMPLES)]:
        assert set(samples) == {k.name for k in KEYWORDS if k.scope is scope and k.kind is not Kind.BLOCK}


@pytest.mark.parametrize("name", sorted(GLOBAL_SAMPLES))
def test_global_keyword_parsed(name):
    text, value = GLOBAL_SAMPLES[name]
    result = p(f"{name} = {text}\n")
    assert not errors(result), result.diagnostics
    assert getattr(result.config, name) == value
    assert result.config.lines[name] == 1


@pytest.mark.parametrize("name", sorted(VIRTUAL_SAMPLES))
def test_virtual_keyword_parsed(name):
    text, value = VIRTUAL_SAMPLES[name]
    result = p(f"virtual v {{\n    {name} = {text}\n}}\n")
    assert not errors(result), result.diagnostics
    v = result.config.virtuals[0]
    assert getattr(v, name) == value
    assert v.lines[name] == 2 and v.line == 1


@pytest.mark.parametrize("name", sorted(SERVER_SAMPLES))
def test_server_keyword_parsed(name):
    text, value = SERVER_SAMPLES[name]
    result = p(f"virtual v {{\n server s {{\n  {name} = {text}\n }}\n}}\n")
    assert not errors(result), result.diagnostics
    s = result.config.virtuals[0].servers[0]
    assert getattr(s, name) == value
    assert s.lines[name] == 3 and s.line == 2


@pytest.mark.parametrize("name", sorted(FAILOVER_SAMPLES))
def test_failover_keyword_parsed(name):
    text, value = FAILOVER_SAMPLES[name]
    result = p(f"service = fos\nfailover f {{\n    {name} = {text}\n}}\n")
    assert not errors(result), result.diagnostics
    assert getattr(result.config.failovers[0], name) == value


# --- every parser error of reference 1.1, at its line -----------------------------------
PARSER_ERRORS = [
    (dg.EMPTY_CONFIGURATION, "", 0),
    (dg.EMPTY_CONFIGURATION, "# nothing but comments\n\n   \n", 0),
    (dg.QUOTATION_MISMATCH, 'primary = 192.0.2.2\nvirtual v {\n send = "GET /\n}\n', 3),
    (dg.QUOTATION_MISMATCH, "primary = 192.0.2.2\ndebug_level = 'x'y\n", 2),
    (dg.UNEXPECTED_EOF, "primary = 192.0.2.2\nvirtual v {\n active = 1\n", 3),
    (dg.UNEXPECTED_EOF, "virtual v {\n server s {\n  active = 1\n }\n\n", 5),
    (dg.UNEXPECTED_ARGUMENTS, "primary = 192.0.2.2\nkeepalive = 2 # seconds\n", 2),
    (dg.UNEXPECTED_ARGUMENTS, "primary = 192.0.2.2\nvirtual v {\n address = 192.0.2.1 eth0 x\n}\n", 3),
    (dg.UNEXPECTED_ARGUMENTS, "virtual v {\n} x\n", 2),
    (dg.UNEXPECTED_ARGUMENTS, "virtual my web {\n}\n", 1),
    (dg.EQUAL_EXPECTED, "primary = 192.0.2.2\nkeepalive 2\n", 2),
    (dg.EQUAL_EXPECTED, "primary = 192.0.2.2\n\nkeepalive=2\n", 3),
    (dg.EQUAL_EXPECTED, "virtual v {\n port =80\n}\n", 2),
    (dg.MISSING_ARGUMENTS, "primary = 192.0.2.2\nkeepalive =\n", 2),
    (dg.MISSING_ARGUMENTS, "virtual v {\n address = 192.0.2.1\n}\n", 2),
    (dg.MISSING_ARGUMENTS, "primary = 192.0.2.2\nvirtual v\n{\n}\n", 2),
    (dg.MISSING_ARGUMENTS, "virtual {\n}\n", 1),
    (dg.BAD_HOSTNAME, "primary = 192.0.2.2\nbackup = 192.0.2.300\n", 2),
    (dg.BAD_HOSTNAME, "primary = 192.0.2.2\nbackup = nosuch.example.net\n", 2),
    (dg.BAD_HOSTNAME, "primary = 0.0.0.0\n", 1),
    (dg.BAD_HOSTNAME, "virtual v {\n sorry_server = web1.example.net\n}\n", 2),
    (dg.BAD_ARGUMENT, "primary = 192.0.2.2\nnetwork = bridge\n", 2),
    (dg.BAD_ARGUMENT, "virtual v {\n\n scheduler = fifo\n}\n", 3),
    (dg.BAD_ARGUMENT, "virtual v {\n port = gopherx\n}\n", 2),
    (dg.INT_EXPECTED, "primary = 192.0.2.2\nkeepalive = 2s\n", 2),
    (dg.INT_EXPECTED, "primary = 192.0.2.2\ndeadtime = 08\n", 2),
    (dg.BOOL_EXPECTED, "primary = 192.0.2.2\nbackup_active = 2\n", 2),
    (dg.UNKNOWN_COMMAND, "primary = 192.0.2.2\nkeepalived = 2\n", 2),
    (dg.UNKNOWN_COMMAND, "virtual v {\n prot = tcp\n}\n", 2),
    (dg.UNKNOWN_COMMAND, "primary = 192.0.2.2\n}\n", 2),
    (dg.UNKNOWN_COMMAND, "server s {\n}\n", 1),
    (dg.LIST_EXPECTED, "virtual v {\n dirs = /etc /var\n}\n", 2),
    (dg.LIST_EXPECTED, "virtual v {\n dirs = [ /etc /var\n}\n", 2),
    (dg.ONLY_ONE_SERVICE, "virtual v {\n}\nfailover f {\n}\n", 3),
    (dg.BAD_NETMASK, "primary = 192.0.2.2\nnat_nmask = 255.255.0\n", 2),
    (dg.BAD_NETMASK, "virtual v {\n vip_nmask = /24\n}\n", 2),
]


@pytest.mark.parametrize("message,text,line", PARSER_ERRORS,
                         ids=[f"{m[:24]}-{i}" for i, (m, _, _) in enumerate(PARSER_ERRORS)])
def test_parser_error_at_line(message, text, line):
    result = p(text)
    found = [(d.line, d.message) for d in errors(result) if d.message.startswith(message)]
    assert found, result.diagnostics
    assert found[0][0] == line, result.diagnostics
    assert str(errors(result)[0]).startswith("t.cf")


def test_every_original_message_is_tested():
    tested = {m for m, _, _ in PARSER_ERRORS} | {dg.IO_ERROR}  # I/O: test below
    assert tested == set(dg.PARSER_MESSAGES)


def test_io_error_missing_file(tmp_path):
    result = parse_file(str(tmp_path / "nope.cf"), RESOLVER)
    (d,) = result.diagnostics
    assert d.severity is Severity.ERROR and d.line == 0 and d.message.startswith(dg.IO_ERROR)
    assert str(d) == f"{tmp_path / 'nope.cf'}: error: {d.message}"


def test_io_error_not_utf8(tmp_path):
    path = tmp_path / "latin1.cf"
    path.write_bytes(b"primary = 192.0.2.2\ndebug_level = caf\xe9\n")
    (d,) = parse_file(str(path), RESOLVER).diagnostics
    assert d.message.startswith(dg.IO_ERROR) and d.line == 2


def test_empty_file_on_disk(tmp_path):
    path = tmp_path / "empty.cf"
    path.write_text("")
    (d,) = parse_file(str(path), RESOLVER).diagnostics
    assert d.message.startswith(dg.EMPTY_CONFIGURATION)


def test_diagnostic_format():
    result = p("primary = 192.0.2.2\nprot = 1\n")
    assert str(errors(result)[0]).startswith('t.cf:2: error: unknown command "prot"')


# --- errors are collected, not first-fail ------------------------------------------------
def test_errors_are_collected_and_parsing_goes_on():
    text = ("primary = 192.0.2.2\n"      # 1
            "keepalive = x\n"             # 2 integer expected
            "deadtime 5\n"                # 3 equal expected
            "virtual v {\n"               # 4
            " active = 2\n"               # 5 boolean expected
            " port = 8080\n"              # 6 fine
            " server s {\n"               # 7
            "  weight = 1 2\n"            # 8 unexpected arguments
            "  address = 10.0.0.1\n"      # 9 fine
            " }\n"                        # 10
            "}\n")                        # 11
    result = p(text)
    assert [(d.line, d.message.split(":")[0].split(",")[0]) for d in errors(result)] == [
        (2, "integer expected"), (3, 'equal (=) expected after command "deadtime"'),
        (5, "boolean expected (0 or 1)"), (8, 'unexpected arguments "2"')]
    v = result.config.virtuals[0]
    assert v.port == 8080 and v.servers[0].address == IP("10.0.0.1")


def test_opener_without_brace_recovers():
    result = p("primary = 192.0.2.2\nvirtual v\n{\n active = 1\n}\n")
    assert len(errors(result)) == 1
    assert result.config.virtuals[0].active


def test_nested_virtual_reports_missing_brace_and_recovers():
    result = p("virtual a {\n active = 1\nvirtual b {\n active = 1\n}\n")
    msgs = [(d.line, d.message) for d in errors(result)]
    assert msgs[0][0] == 3 and msgs[0][1].startswith(dg.UNKNOWN_COMMAND) and "missing" in msgs[0][1]
    assert [v.name for v in result.config.virtuals] == ["a", "b"]


@pytest.mark.parametrize("text", [
    "server a {\nserver b {\n}\n}\n",             # server in server, both outside a virtual
    "service = fos\nfailover f {\n server s {\n  address = 192.0.2.1\n }\n}\n",
    "virtual v {\n server a {\n server b {\n }\n}\n",
    "}\n}\nvirtual v {\n server a {\n",
])
def test_misplaced_blocks_never_crash_and_are_reported(text):
    result = p(text)
    assert errors(result)
    for v in result.config.virtuals:
        assert all(s.name in ("a", "b") for s in v.servers)


def test_keyword_in_wrong_scope_says_where_it_belongs():
    result = p("virtual v {\n weight = 3\n}\n")
    assert "server" in errors(result)[0].message


# --- lexical rules ----------------------------------------------------------------------
def test_tokenize_rules():
    assert tokenize("   # comment") == []
    assert tokenize("") == []
    assert [t.text for t in tokenize('send = "GET / HTTP/1.0"')] == ["send", "=", "GET / HTTP/1.0"]
    assert [t.text for t in tokenize("expect = 'say \"hi\"'")] == ["expect", "=", 'say "hi"']
    assert [t.text for t in tokenize('expect = HTTP/1.1"200')] == ["expect", "=", 'HTTP/1.1"200']
    assert [t.text for t in tokenize("a\t=\tb")] == ["a", "=", "b"]
    assert tokenize('x = ""')[2].text == "" and tokenize('x = ""')[2].quoted
    with pytest.raises(LineError):
        tokenize('x = "abc')


def test_dos_and_mac_line_endings_count_lines_once():
    result = p("primary = 192.0.2.2\r\nkeepalive = 3\r\nbad\r\n")
    assert result.config.keepalive == 3
    assert errors(result)[0].line == 3
    result = p("primary = 192.0.2.2\rkeepalive = 4\r")
    assert result.config.keepalive == 4 and not errors(result)


def test_trailing_comment_is_an_error_but_comment_lines_anywhere_are_fine():
    result = p("  # lead\nprimary = 192.0.2.2\nvirtual v {\n\t# inside\n active = 1\n}\n")
    assert not errors(result)


@pytest.mark.parametrize("text,value,octal", [
    ("10", 10, False), ("0x1F", 31, False), ("0X1f", 31, False), ("017", 15, True),
    ("0", 0, False), ("00", 0, False), ("07", 7, False), ("-5", -5, False), ("+5", 5, False),
    ("-010", -8, True),
])
def test_c_integers(text, value, octal):
    got, note = parse_c_int(text)
    assert got == value and (note is not None) == octal


@pytest.mark.parametrize("text", ["", "08", "0x", "1.5", "10s", " 1", "0b1", "1e3", "9" * 30])
def test_bad_c_integers(text):
    with pytest.raises(LineError):
        parse_c_int(text)


def test_octal_integer_is_accepted_with_a_warning():
    result = p("primary = 192.0.2.2\ndeadtime = 017\n")
    assert result.config.deadtime == 15
    (w,) = warnings(result)
    assert w.line == 2 and "octal" in w.message and "15" in w.message


def test_boolean_through_integer_reader():
    assert p("backup_active = 0x1\n").config.backup_active is True


def test_host_names_resolve_and_ports_by_service_name():
    result = p("primary = lvs1.example.net\nheartbeat_port = http\n")
    assert result.config.primary == IP("192.0.2.2") and result.config.heartbeat_port == 80


def test_leading_zero_dotted_quad_is_rejected_not_resolved():
    result = p("primary = 010.0.0.1\n")
    assert errors(result)[0].message.startswith(dg.BAD_HOSTNAME)


def test_quoted_structural_tokens_are_plain_strings():
    result = p('virtual "}" {\n dirs = [ "]" "[" a ]\n address = 192.0.2.1 "{"\n}\n')
    assert not errors(result), result.diagnostics
    v = result.config.virtuals[0]
    assert v.name == "}" and v.dirs == ("]", "[", "a") and v.address.device == "{"


def test_quoted_names_with_blanks():
    result = p('virtual "my web" {\n server \'web one\' {\n }\n}\n')
    assert result.config.virtuals[0].name == "my web"
    assert result.config.virtuals[0].servers[0].name == "web one"


def test_duplicate_keyword_warns_and_last_wins():
    result = p("primary = 192.0.2.2\nkeepalive = 3\nkeepalive = 4\n")
    assert result.config.keepalive == 4
    (w,) = warnings(result)
    assert w.line == 3 and "line 2" in w.message


# --- quirks (reference 1.1 rules 9-10, 1.2, 1.3) -----------------------------------------
def test_quirk_primary_private_does_not_overwrite_backup_private():
    result = p("primary = 192.0.2.2\nbackup = 192.0.2.3\nbackup_private = 10.9.9.3\n")
    c = result.config
    assert c.primary_private is None and c.primary_private_address == IP("192.0.2.2")
    assert c.backup_private == IP("10.9.9.3") and c.backup_private_address == IP("10.9.9.3")


def test_missing_private_addresses_default_to_public():
    c = p("primary = 192.0.2.2\nbackup = 192.0.2.3\n").config
    assert c.primary_private_address == c.primary and c.backup_private_address == c.backup


def test_quirk_port_after_servers_uses_final_port_and_warns():
    text = ("virtual v {\n"          # 1
            " server a {\n }\n"      # 2-3
            " server b {\n  port = 9000\n }\n"  # 4-6
            " port = 8080\n"          # 7
            "}\n")
    result = p(text)
    v = result.config.virtuals[0]
    assert v.servers[0].port is None and v.server_port(v.servers[0]) == 8080
    assert v.servers[1].port == 9000
    (w,) = warnings(result)
    assert w.line == 7 and '"a"' in w.message and "80" in w.message and '"b"' not in w.message


def test_port_before_servers_does_not_warn():
    result = p("virtual v {\n port = 8080\n server a {\n }\n}\n")
    assert not result.diagnostics


def test_port_after_servers_with_same_value_does_not_warn():
    result = p("virtual v {\n server a {\n }\n port = 80\n}\n")
    assert not result.diagnostics


def test_quirk_single_quotes_are_stripped_like_double_quotes():
    v = p("virtual v {\n send = 'GET /'\n expect = \"HTTP\"\n}\n").config.virtuals[0]
    assert v.send == "GET /" and v.expect == "HTTP"


def test_quirk_pmask_all_ones_means_unset():
    assert p("virtual v {\n pmask = 255.255.255.255\n}\n").config.virtuals[0].pmask == ANY


def test_sorry_server_zero_means_unset():
    assert p("virtual v {\n sorry_server = 0.0.0.0\n}\n").config.virtuals[0].sorry_server is None


def test_primary_private_zero_is_an_error():
    assert errors(p("primary_private = 0.0.0.0\n"))[0].message.startswith(dg.BAD_HOSTNAME)


def test_failover_block_rejects_virtual_only_keywords():
    result = p("service = fos\nfailover f {\n scheduler = rr\n}\n")
    assert errors(result)[0].message.startswith(dg.UNKNOWN_COMMAND)


def test_line_numbers_do_not_affect_equality():
    a = p("primary = 192.0.2.2\nvirtual v {\n active = 1\n}\n").config
    b = p("\n\n\nprimary = 192.0.2.2\n\nvirtual v {\n\n active = 1\n}\n").config
    assert a == b and a.virtuals[0].line != b.virtuals[0].line


@pytest.mark.parametrize("text,value", [("0.2", 0.2), ("2", 2), (".5", 0.5), ("3.", 3.0)])
def test_keepalive_takes_fractions(text, value):
    result = parse(f"keepalive = {text}\n", "lvs.cf")
    assert result.ok and result.config.keepalive == value


def test_heartbeat_below_minimum_is_an_error():
    from pylvs.config.check import check_text

    result = check_text("primary = 10.0.0.1\nkeepalive = 0.01\ndeadtime = 0.02\n", "lvs.cf")
    errors = [str(d) for d in result.diagnostics if d.severity is Severity.ERROR]
    assert any("lvs.cf:2" in e and "keepalive" in e for e in errors)
    assert any("lvs.cf:3" in e and "deadtime" in e for e in errors)
