"""ipvsadm's listings, byte for byte: hand-made tables, then real ipvsadm 1.31 output.

The golden cases (``tests/data/kernel-ipvs``) are turned back into snapshots by the
small parsers below: the table of ``ipvsadm.jsonl`` from its ``-S -n`` text (creation order
and the kernel's server order from the commands that built it, thresholds from its
``--thresholds`` listing), the table of ``ipvsadm-traffic.jsonl`` and its counters from
its own listings, connections from the ``-L -c`` lines.  Then every listing made from
them must be the captured bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pylvs.ipvsadm import format_list, format_rate, format_stats
from pylvs.ipvsadm.command import ListFormat
from pylvs.ipvsadm.listing import (
    ReverseResolver,
    format_connections,
    format_daemon,
    format_json,
    format_save,
    format_services,
    format_timeout,
    kernel_order,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "kernel-ipvs"
NETNS_HASH = 160  # the captures' (size_t)ipvs >> 8 term of ip_vs_svc_hashkey (found by L-n-nosort)

# The service names of the captures' /etc/services (ipvsadm -L, -S, -L -c without -n).
PORT_NAMES = {80: "http", 443: "https", 8080: "http-alt", 21: "ftp", 53: "domain", 5060: "sip", 5353: "mdns"}
NAMES = ReverseResolver(host=lambda addr: None, service=lambda port, proto: PORT_NAMES.get(port))
NAME_PORTS = {v: k for k, v in PORT_NAMES.items()}


def dest(addr, port, fwd, w, act, inact, stats=(0, 0, 0, 0, 0), rates=(0, 0, 0, 0, 0)):
    return {"addr": addr, "port": port, "forward": fwd, "weight": w, "active": act, "inactive": inact,
            "stats": dict(zip(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), stats, strict=True)),
            "rates": dict(zip(("cps", "inpps", "outpps", "inbps", "outbps"), rates, strict=True))}


def svc(proto, vip, port, sched, dests, fwmark=0, persistent=0, pmask="255.255.255.255",
        stats=(0, 0, 0, 0, 0), rates=(0, 0, 0, 0, 0)):
    return {"proto": proto, "vip": vip, "port": port, "fwmark": fwmark, "scheduler": sched,
            "persistent": persistent, "pmask": pmask, "dests": dests,
            "stats": dict(zip(("conns", "inpkts", "outpkts", "inbytes", "outbytes"), stats, strict=True)),
            "rates": dict(zip(("cps", "inpps", "outpps", "inbps", "outbps"), rates, strict=True))}


SNAP = {"size": 4096, "services": [
    svc("TCP", "192.168.1.100", 443, "rr", [dest("10.0.0.12", 443, "Route", 0, 1, 7),
                                            dest("10.0.0.11", 443, "Route", 1, 3, 10)],
        persistent=300, pmask="255.255.255.0"),
    svc("TCP", "192.168.1.100", 0, "wlc", [dest("10.0.0.21", 0, "Tunnel", 1, 0, 0)], fwmark=100),
    svc("TCP", "192.168.1.100", 80, "wlc", [dest("10.0.0.11", 80, "Masq", 1, 12, 140),
                                            dest("10.0.0.12", 80, "Masq", 2, 25, 301)]),
]}


# --- Hand-made tables ----------------------------------------------------------------------

def test_list_numeric_layout():
    assert format_list(SNAP) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  192.168.1.100:80 wlc\n"
        "  -> 10.0.0.11:80                 Masq    1      12         140       \n"
        "  -> 10.0.0.12:80                 Masq    2      25         301       \n"
        "TCP  192.168.1.100:443 rr persistent 300 mask 255.255.255.0\n"
        "  -> 10.0.0.11:443                Route   1      3          10        \n"
        "  -> 10.0.0.12:443                Route   0      1          7         \n"
        "FWM  100 wlc\n"
        "  -> 10.0.0.21:0                  Tunnel  1      0          0         \n"
    )


def test_stats_layout_and_large_numbers():
    snap = {"size": 4096, "services": [
        svc("TCP", "192.168.1.100", 80, "wlc", [
            dest("10.0.0.11", 80, "Masq", 1, 0, 0, (760, 24101, 23990, 1955012, 31234567)),
            dest("10.0.0.12", 80, "Masq", 1, 0, 0, (763, 24110, 24002, 1957333, 31299001))],
            stats=(1523, 48211, 0, 3912345, 0)),
        svc("UDP", "192.168.1.100", 53, "sh", [dest("10.0.0.31", 53, "Masq", 1, 0, 0)],
            stats=(981234567, 0, 0, 0, 0)),
    ]}
    assert format_stats(snap) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
        "  -> RemoteAddress:Port\n"
        "TCP  192.168.1.100:80                 1523    48211        0  3912345        0\n"
        "  -> 10.0.0.11:80                      760    24101    23990  1955012 31234567\n"
        "  -> 10.0.0.12:80                      763    24110    24002  1957333 31299001\n"
        "UDP  192.168.1.100:53              981234K        0        0        0        0\n"
        "  -> 10.0.0.31:53                        0        0        0        0        0\n"
    )
    assert "981234567" in format_stats(snap, exact=True)


def test_rate_layout():
    snap = {"size": 4096, "services": [
        svc("TCP", "192.168.1.100", 80, "wlc", [
            dest("10.0.0.11", 80, "Masq", 1, 0, 0, rates=(2, 21, 20, 1460, 27800)),
            dest("10.0.0.12", 80, "Masq", 1, 0, 0, rates=(1, 20, 19, 1410, 26900))],
            rates=(3, 41, 0, 2870, 0))]}
    assert format_rate(snap) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        "  -> RemoteAddress:Port\n"
        "TCP  192.168.1.100:80                    3       41        0     2870        0\n"
        "  -> 10.0.0.11:80                        2       21       20     1460    27800\n"
        "  -> 10.0.0.12:80                        1       20       19     1410    26900\n"
    )


def test_print_largenum_units_and_exact():
    """print_largenum: %9llu below 10^8, else %8llu + K (<10^9), M (<10^11), G (<10^14), T;
    --exact: the whole number, one column wider than it when it has more than 8 digits."""
    name = "TCP  10.0.0.1:80                 "
    cases = [
        ((99_999_999, 100_000_000, 999_999_999, 1_000_000_000, 99_999_999_999),
         " 99999999  100000K  999999K    1000M   99999M",
         " 99999999 100000000 999999999 1000000000 99999999999"),
        ((100_000_000_000, 99_999_999_999_999, 100_000_000_000_000, 123_456_789_012_345_678, 0),
         "     100G   99999G     100T  123456T        0",
         " 100000000000 99999999999999 100000000000000 123456789012345678        0"),
    ]  # fmt: skip
    for stats, short, exact in cases:
        snap = {"size": 1, "services": [svc("TCP", "10.0.0.1", 80, "rr", [], stats=stats)]}
        assert format_stats(snap).splitlines()[3] == name + short
        assert format_stats(snap, exact=True).splitlines()[3] == name + exact


def test_real_server_counters_as_ipvsadm_reads_them():
    """libipvs 1.31 reads a real server's counters with nla_get_u32 (bytes excepted), and
    --rate prints a real server's CPS/InPPS/OutPPS with %8llu, never abbreviated."""
    big = 2**32 + 5
    d = dest("10.0.0.11", 80, "Masq", 1, 0, 0, stats=(big, big, big, big, big), rates=(123456789,) * 5)
    snap = {"size": 1, "services": [svc("TCP", "10.0.0.1", 80, "rr", [d], stats=(big,) * 5)]}
    lines = format_stats(snap).splitlines()
    assert lines[3] == "TCP  10.0.0.1:80                     4294M    4294M    4294M    4294M    4294M"
    assert lines[4] == "  -> 10.0.0.11:80                        5        5        5    4294M    4294M"
    assert format_rate(snap).splitlines()[4] == (
        "  -> 10.0.0.11:80                 123456789 123456789 123456789  123456K  123456K")


def test_sort_compares_addresses_as_ipvsadm_does():
    """ipvs_cmp_services subtracts unsigned addresses into an int: 192.168/16 and 10/8
    are more than 2^31 apart, so 192.168.0.1 sorts first; close addresses sort normally."""
    snap = {"size": 1, "services": [svc("TCP", "10.0.0.1", 80, "rr", []), svc("TCP", "192.168.0.1", 80, "rr", []),
                                     svc("TCP", "10.0.0.2", 80, "rr", []), svc("UDP", "1.1.1.1", 53, "rr", [])]}
    names = [line.split()[1] for line in format_list(snap).splitlines()[3:]]
    assert names == ["192.168.0.1:80", "10.0.0.1:80", "10.0.0.2:80", "1.1.1.1:53"]


def test_service_suffixes_and_rules():
    s = svc("UDP", "10.0.0.1", 5060, "sh", [], persistent=60, pmask="255.255.0.0")
    s.update(sched_flags=1 | 2 | 4, ops=True, pe="sip")
    one = format_services({}, ListFormat(numeric=True), s).splitlines()[2]
    assert one == "UDP  10.0.0.1:5060 sh (sh-fallback,sh-port) persistent 60 mask 255.255.0.0 pe sip ops"
    s2 = dict(s, persistent=0, scheduler="rr", sched_flags=2)
    assert format_services({}, ListFormat(numeric=True), s2).splitlines()[2] == "UDP  10.0.0.1:5060 rr (flag-2) ops"
    # -S prints --pe without persistence, list does not; an sh flag-3 alone gives an empty -b
    assert format_save({"services": [s2]}, True) == "-A -u 10.0.0.1:5060 -s rr --pe sip -o -b flag-2\n"
    s3 = dict(s, sched_flags=4, pe=None, ops=False)
    assert format_save({"services": [s3]}, True) == "-A -u 10.0.0.1:5060 -s sh -p 60 -M 255.255.0.0 -b \n"
    fwm = dict(svc("TCP", "0.0.0.0", 0, "rr", []), fwmark=2**31 + 1, af=6)
    assert format_list({"size": 1, "services": [fwm]}).splitlines()[3] == "FWM  -2147483647 IPv6 rr"


def test_old_snapshots_default_missing_keys():
    d = {"addr": "10.0.0.5", "port": 80, "forward": "Tunnel", "weight": 1, "active": 0, "inactive": 0}
    s = {"proto": "TCP", "vip": "10.0.0.1", "port": 80, "fwmark": 0, "scheduler": "rr", "persistent": 0,
         "pmask": "255.255.255.255", "dests": [d]}
    snap = {"size": 4096, "services": [s]}
    assert format_services(snap, ListFormat(numeric=True, tun_info=True)).splitlines()[4] == (
        "  -> 10.0.0.5:80                  Tunnel  ipip          1      0          0         ")
    assert format_save(snap, True).splitlines()[1] == "-a -t 10.0.0.1:80 -r 10.0.0.5:80 -i -w 1 --tun-type ipip"
    assert format_services(snap, ListFormat(numeric=True, stats=True)).splitlines()[4].split()[2:] == ["0"] * 5


def test_nosort_is_the_kernel_hash_order():
    # (6 ^ 10.0.0.1 ^ (80 >> 8) ^ 80) & 255 = 87, 10.0.0.2 gives 84: bucket 84 first; the
    # firewall-mark table after the other; inside one bucket the newest first.
    a, b = svc("TCP", "10.0.0.1", 80, "rr", []), svc("TCP", "10.0.0.2", 80, "rr", [])
    c = svc("TCP", "10.0.0.1", 80, "rr", [], fwmark=1)
    assert kernel_order([a, c, b]) == [b, a, c]
    same1, same2 = svc("TCP", "10.0.0.1", 0x51, "rr", []), svc("TCP", "10.0.0.0", 0x50, "rr", [])
    assert kernel_order([same1, same2]) == [same2, same1]  # one bucket: the newest first


def test_connections_with_pe_data():
    conn = {"proto": "UDP", "expires": 3599.9, "state": "UDP", "caddr": "10.0.0.5", "cport": 5060,
            "vaddr": "10.0.0.1", "vport": 5060, "daddr": "2001:0db8:0000::0010", "dport": 5060,
            "template": False, "pe_name": "sip", "pe_data": "call-1"}
    fmt = ListFormat(numeric=True, connection=True, persistent_conn=True)
    assert format_connections([conn], fmt).splitlines()[2] == (
        "UDP 59:59  UDP         10.0.0.5:5060      10.0.0.1:5060      [2001:db8::10]:5060 sip                call-1")
    assert format_connections([conn], ListFormat(numeric=True)).splitlines()[2] == (
        "UDP 59:59  UDP         10.0.0.5:5060      10.0.0.1:5060      [2001:db8::10]:5060")
    assert format_connections([dict(conn, expires=-3)], ListFormat(numeric=True)).splitlines()[2][4:9] == "00:00"


def test_json():
    doc = json.loads(format_json(snapshot=SNAP))
    assert doc["version"] == 1 and doc["size"] == 4096
    assert [s["port"] for s in doc["services"]] == [80, 443, 0]
    assert doc["services"][1]["dests"][0]["addr"] == "10.0.0.11"  # sorted, as the listing
    assert doc["services"][2]["dests"][0]["tun_type"] == "ipip"
    assert json.loads(format_json(service=SNAP["services"][0]))["service"]["pmask"] == "255.255.255.0"
    assert json.loads(format_json(timeouts=(900, 120, 300)))["timeout"] == {"tcp": 900, "tcpfin": 120, "udp": 300}
    assert json.loads(format_json(daemons=[]))["daemon"] == []
    text = format_json(conns=[])
    assert text == '{\n "connections": [],\n "version": 1\n}\n'
    with pytest.raises(ValueError):
        format_json(conns=[], timeouts=(1, 2, 3))


# --- The captures: snapshots made from them ----------------------------------------------

def records(name):
    return {r["id"]: r for r in map(json.loads, (GOLDEN / name).read_text().splitlines())}


def ordered_records(name):
    return [json.loads(line) for line in (GOLDEN / name).read_text().splitlines()]


PROTO_OPTIONS = {"-t": "TCP", "--tcp-service": "TCP", "-u": "UDP", "--udp-service": "UDP", "--sctp-service": "SCTP",
                 "-f": "FWM", "--fwmark-service": "FWM"}
SCHED_FLAG_BITS = {"sh-fallback": 1, "sh-port": 2, "mh-fallback": 1, "mh-port": 2, "flag-1": 1, "flag-2": 2,
                   "flag-3": 4}
FORWARDS = {"-m": "Masq", "-g": "Route", "-i": "Tunnel"}


def split_addr(text):
    """'10.1.0.1:80' / '[2001:db8::1]:80' / '192.168.10.6' -> (address, port or None)."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\w+))?|([0-9.]+)(?::(\w+))?", text)
    addr, port = (m[1], m[2]) if m[1] else (m[3], m[4])
    return addr, None if port is None else int(port) if port.isdigit() else NAME_PORTS[port]


def svc_key(proto, addr_text):
    """How a service is named across listings, rules and commands."""
    if proto == "FWM":
        return ("FWM", addr_text)
    addr, port = split_addr(addr_text)
    return (proto, addr, port)


def creation_order(recs):
    """Services in the order the commands made them, each one's servers newest first."""
    services, dests = [], {}
    for r in recs:
        argv = r.get("argv") or []
        if r.get("rc") != 0 or len(argv) < 2 or argv[1] not in ("-A", "--add-service", "-a", "--add-server"):
            continue
        i = next(i for i, a in enumerate(argv) if a in PROTO_OPTIONS)
        key = svc_key(PROTO_OPTIONS[argv[i]], argv[i + 1])
        if argv[1] in ("-A", "--add-service"):
            services.append(key)
        else:
            r_at = next(i for i, a in enumerate(argv) if a in ("-r", "--real-server"))
            dests.setdefault(key, []).insert(0, split_addr(argv[r_at + 1])[0])
    return services, dests


def snapshot_from_save(save_text, recs, thresholds_text=""):
    """A snapshot from ``ipvsadm -S -n`` (+ ``--thresholds``), in creation/kernel order."""
    by_key = {}
    for line in save_text.splitlines():
        t = line.split()
        proto = PROTO_OPTIONS[t[1]]
        key = svc_key(proto, t[2])
        if t[0] == "-A":
            s = {"proto": "TCP" if proto == "FWM" else proto, "af": 4, "vip": "0.0.0.0", "port": 0, "fwmark": 0,
                 "scheduler": "", "persistent": 0, "pmask": "255.255.255.255", "sched_flags": 0, "ops": False,
                 "pe": None, "dests": []}
            if proto == "FWM":
                s["fwmark"] = int(t[2])
                s["af"] = 6 if "-6" in t else 4
            else:
                s["vip"], s["port"] = split_addr(t[2])
                s["af"] = 6 if ":" in s["vip"] else 4
            opts = t[3:]
            for i, o in enumerate(opts):
                if o == "-s":
                    s["scheduler"] = opts[i + 1]
                elif o == "-p":
                    s["persistent"] = int(opts[i + 1])
                elif o == "-M":
                    s["pmask"] = opts[i + 1]
                elif o == "--pe":
                    s["pe"] = opts[i + 1]
                elif o == "-o":
                    s["ops"] = True
                elif o == "-b":
                    s["sched_flags"] = sum(SCHED_FLAG_BITS[f] for f in opts[i + 1].split(","))
            by_key[key] = s
        else:
            r_at = t.index("-r")
            addr, port = split_addr(t[r_at + 1])
            d = {"addr": addr, "port": port, "forward": FORWARDS[t[r_at + 2]], "weight": int(t[t.index("-w") + 1]),
                 "active": 0, "inactive": 0, "persistent": 0, "uthreshold": 0, "lthreshold": 0}
            if "--tun-type" in t:
                d["tun_type"] = t[t.index("--tun-type") + 1]
            if "--tun-port" in t:
                d["tun_port"] = int(t[t.index("--tun-port") + 1])
            for flag in ("nocsum", "csum", "remcsum"):
                if f"--tun-{flag}" in t:
                    d["tun_flags"] = flag
            by_key[key]["dests"].append(d)
    for key, dest_addr, cols in listing_rows(thresholds_text):
        d = next(d for d in by_key[key]["dests"] if (d["addr"], d["port"]) == dest_addr)
        d["uthreshold"], d["lthreshold"] = int(cols[0]), int(cols[1])
    # what -R made (from stdin) is not in the commands: it goes last, in the rules' order
    services, dest_order = creation_order(recs)
    made = sorted(by_key, key=lambda k: services.index(k) if k in services else len(services))
    for k in made:
        order = dest_order.get(k, [])
        by_key[k]["dests"].sort(key=lambda d: order.index(d["addr"]) if d["addr"] in order else len(order))
    return {"size": 4096, "services": [by_key[k] for k in made]}


def listing_rows(text):
    """(service key, (address, port), columns) of every real-server line of a -L -n listing."""
    key = None
    for line in text.splitlines():
        t = line.split()
        if not t or t[0] in ("IP", "Prot") or line.startswith("  -> RemoteAddress"):
            continue
        if t[0] == "->":
            yield key, split_addr(t[1]), t[2:]
        else:
            key = svc_key(t[0], t[1])


def service_rows(text):
    """(service key, columns after the name) of every service line of a -L -n listing."""
    for line in text.splitlines():
        t = line.split()
        if t and t[0] in ("TCP", "UDP", "SCTP", "FWM"):
            yield svc_key(t[0], t[1]), t[2:]


@pytest.fixture(scope="module")
def g():
    return records("ipvsadm.jsonl")


@pytest.fixture(scope="module")
def table(g):
    """The table of the captures' `list` section (built by the add-* sections)."""
    recs = [r for r in ordered_records("ipvsadm.jsonl") if r["section"] in ("add-services", "add-servers")]
    return snapshot_from_save(g["S-n"]["stdout"], recs, g["L-n-thresholds"]["stdout"])


def out(rec):
    assert rec["rc"] == 0 and rec["stderr"] == ""
    return rec["stdout"]


def fmt(**kw):
    return ListFormat(**kw)


@pytest.mark.parametrize("case, kw", [
    ("L-n", {"numeric": True}),
    ("L-n-exact", {"numeric": True, "exact": True}),
    ("L-n-sort", {"numeric": True}),
    ("L-n-stats", {"numeric": True, "stats": True}),
    ("L-n-stats-exact", {"numeric": True, "stats": True, "exact": True}),
    ("L-n-rate", {"numeric": True, "rate": True}),
    ("L-n-rate-exact", {"numeric": True, "rate": True, "exact": True}),
    ("L-n-thresholds", {"numeric": True, "thresholds": True}),
    ("L-n-persistent-conn", {"numeric": True, "persistent_conn": True}),
    ("L-n-tun-info", {"numeric": True, "tun_info": True}),
    ("rt-list-after-restore", {"numeric": True}),
])  # fmt: skip
def test_golden_table_listings(g, table, case, kw):
    assert format_services(table, fmt(**kw)) == out(g[case])


def test_golden_names(g, table):
    assert format_services(table, fmt(), resolve=NAMES) == out(g["L-names"])
    assert format_save(table, False, resolve=NAMES) == out(g["S"])


def test_golden_save(g, table):
    assert format_save(table, True) == out(g["S-n"]) == out(g["rt-save-again"])
    assert format_save({"size": 4096, "services": []}, True) == out(g["save-empty"]) == ""


def test_golden_empty_table(g):
    empty = {"size": 4096, "services": []}
    for case in ("list-empty", "list-empty-lower", "list-empty-long", "rt-list-after-clear"):
        assert format_services(empty, fmt(numeric=True)) == out(g[case])
    assert format_services(empty, fmt()) == out(g["noargs"])


def test_golden_nosort(g, table):
    """The kernel's hash order: byte-identical with the captures' netns term; with 0 (what
    pylvs has) the same lines, the buckets in another order."""
    want = out(g["L-n-nosort"])
    assert format_services(table, fmt(numeric=True, nosort=True), netns_hash=NETNS_HASH) == want
    ours = format_services(table, fmt(numeric=True, nosort=True))
    assert ours != want and sorted(ours.splitlines()) == sorted(want.splitlines())
    # the servers are as the kernel lists them (newest first) whatever the term
    assert "  -> 192.168.10.6:80" in ours.split("TCP  10.1.0.1:80 rr\n")[1].splitlines()[0]


@pytest.mark.parametrize("case, key, kw", [
    ("L-n-one-svc", ("TCP", "10.1.0.1", 80), {}),
    ("L-n-one-fwm", ("FWM", "1"), {}),
    ("L-n-one-udp", ("UDP", "10.1.0.1", 53), {}),
    ("L-n-one-ipv6", ("TCP", "2001:db8::1", 80), {}),
    ("L-n-one-svc-stats", ("TCP", "10.1.0.1", 80), {"stats": True}),
    ("L-n-one-svc-thr", ("TCP", "10.1.0.3", 80), {"thresholds": True}),
])  # fmt: skip
def test_golden_one_service(g, table, case, key, kw):
    one = next(s for s in table["services"]
               if (("FWM", str(s["fwmark"])) if s["fwmark"] else (s["proto"], s["vip"], s["port"])) == key)
    assert format_services(table, fmt(numeric=True, **kw), one) == out(g[case])


def test_golden_stats_wins_over_rate(g):
    """err-stats-rate: --stats with --rate lists --stats (state as at L-n-final: every
    command in between failed)."""
    recs = ordered_records("ipvsadm.jsonl")
    before = recs[: next(i for i, r in enumerate(recs) if r["id"] == "err-stats-rate")]
    snap = snapshot_from_save(out(g["S-n-final"]), before)
    assert format_services(snap, fmt(numeric=True)) == out(g["L-n-final"])
    assert format_services(snap, fmt(numeric=True, stats=True, rate=True)) == out(g["err-stats-rate"])


def snapshot_from_listing(text, thresholds=False):
    """A snapshot back from a ``-L -n`` listing, default or ``--thresholds`` layout."""
    services = {}
    for key, cols in service_rows(text):
        s = {"proto": "TCP" if key[0] == "FWM" else key[0], "vip": "0.0.0.0", "port": 0, "fwmark": 0,
             "scheduler": cols[0], "persistent": 0, "pmask": "255.255.255.255", "dests": []}
        if key[0] == "FWM":
            s["fwmark"], s["af"] = int(key[1]), 6 if cols[0] == "IPv6" else 4
            cols = cols[1:] if cols[0] == "IPv6" else cols
            s["scheduler"] = cols[0]
        else:
            s["vip"], s["port"], s["af"] = key[1], key[2], 6 if ":" in key[1] else 4
        for i, c in enumerate(cols):
            if c.startswith("("):
                s["sched_flags"] = sum(SCHED_FLAG_BITS[f] for f in c.strip("()").split(","))
            elif c in ("persistent", "mask", "pe"):
                s[{"mask": "pmask"}.get(c, c)] = int(cols[i + 1]) if c == "persistent" else cols[i + 1]
            elif c == "ops":
                s["ops"] = True
        services[key] = s
    for key, (addr, port), cols in listing_rows(text):
        d = {"addr": addr, "port": port, "forward": "Route", "weight": 1}
        if thresholds:
            d["uthreshold"], d["lthreshold"], d["active"], d["inactive"] = map(int, cols)
        else:
            d["forward"], d["weight"], d["active"], d["inactive"] = cols[0], *map(int, cols[1:])
        services[key]["dests"].append(d)
    return {"size": 4096, "services": list(services.values())}


def test_golden_every_default_listing(g):
    """Every plain -L -n capture, the whole table or one service, read back and printed
    again (weights up to 2^31-1 overflow their column; flags after -E; a service -R made)."""
    cases = [r for r in g.values() if r["rc"] == 0 and r["argv"][:3] == ["ipvsadm", "-L", "-n"]
             and not set(r["argv"][3:]) & {"--stats", "--rate", "--thresholds", "--persistent-conn", "--tun-info",
                                            "--nosort", "-c", "--timeout", "--daemon"}]
    assert len(cases) >= 15
    for r in cases:
        snap = snapshot_from_listing(r["stdout"])
        one = len(r["argv"]) > 3 and r["argv"][3] in ("-t", "-u", "-f")
        if one:
            [svc_] = snap["services"]
            assert format_services(snap, fmt(numeric=True), svc_) == r["stdout"], r["id"]
        else:
            assert format_services(snap, fmt(numeric=True)) == r["stdout"], r["id"]


def test_golden_every_thresholds_listing(g):
    """Every -L -n --thresholds capture (after -e too), read back and printed again."""
    cases = [r for r in g.values() if r["rc"] == 0 and "--thresholds" in r["argv"]]
    assert len(cases) >= 4
    for r in cases:
        snap = snapshot_from_listing(r["stdout"], thresholds=True)
        one = snap["services"][0] if "-t" in r["argv"] else None
        assert format_services(snap, fmt(numeric=True, thresholds=True), one) == r["stdout"], r["id"]


def test_golden_connections_empty(g):
    assert format_connections([], fmt(numeric=True, connection=True)) == out(g["L-n-c-empty"])


@pytest.mark.parametrize("cases, timeouts", [
    (("timeout-default", "to-1", "to-2", "to-3"), (900, 120, 300)),
    (("to-4", "to-n"), (900, 60, 300)),
])  # fmt: skip
def test_golden_timeout(g, cases, timeouts):
    for case in cases:
        assert format_timeout(timeouts) == out(g[case])


def daemon(state, iface, syncid, maxlen=1472, group="224.0.0.81", port=8848, ttl=1):
    return {"state": state, "mcast_interface": iface, "syncid": syncid, "sync_maxlen": maxlen, "mcast_group": group,
            "mcast_port": port, "mcast_ttl": ttl}


def test_golden_daemon(g):
    master, backup = daemon("master", "sync0", 5), daemon("backup", "sync1", 6)
    assert format_daemon([master]) == out(g["dm-list-1"])
    assert format_daemon([backup, master]) == out(g["dm-list-2"]) == out(g["dm-list-n"])  # master first
    assert format_daemon([backup]) == out(g["dm-list-3"])
    assert format_daemon([]) == out(g["dm-list-4"]) == out(g["daemon-none"]) == ""
    assert format_daemon([daemon("master", "sync0", 7, 1000, "224.0.0.100", 8849, 2)]) == out(g["dm-list-full"])


# --- The traffic captures: counters and connections ---------------------------------------

@pytest.fixture(scope="module")
def t():
    return records("ipvsadm-traffic.jsonl")


def traffic_snapshot(t, stats="L-n-stats", rates="L-n-rate"):
    """The traffic table from its own listings: -L -n (services, servers, connections),
    --persistent-conn, --thresholds and the counters of the named --stats/--rate captures."""
    by_key, dests = {}, {}
    for key, cols in service_rows(out(t["L-n"])):
        s = {"proto": key[0], "vip": key[1], "port": key[2], "fwmark": 0, "scheduler": cols[0], "persistent": 0,
             "pmask": "255.255.255.255", "dests": []}
        if "persistent" in cols:
            s["persistent"] = int(cols[cols.index("persistent") + 1])
        if "mask" in cols:
            s["pmask"] = cols[cols.index("mask") + 1]
        by_key[key] = s
    for key, addr, cols in listing_rows(out(t["L-n"])):
        d = {"addr": addr[0], "port": addr[1], "forward": cols[0], "weight": int(cols[1]), "active": int(cols[2]),
             "inactive": int(cols[3])}
        dests[key, addr] = d
        by_key[key]["dests"].append(d)
    for key, addr, cols in listing_rows(out(t["L-n-persistent-conn"])):
        dests[key, addr]["persistent"] = int(cols[1])
    for key, addr, cols in listing_rows(out(t["L-n-thresholds"])):
        dests[key, addr]["uthreshold"], dests[key, addr]["lthreshold"] = int(cols[0]), int(cols[1])
    for case, part, names in ((stats, "stats", ("conns", "inpkts", "outpkts", "inbytes", "outbytes")),
                              (rates, "rates", ("cps", "inpps", "outpps", "inbps", "outbps"))):
        for key, cols in service_rows(out(t[case])):
            by_key[key][part] = dict(zip(names, map(int, cols), strict=True))
        for key, addr, cols in listing_rows(out(t[case])):
            dests[key, addr][part] = dict(zip(names, map(int, cols), strict=True))
    services, order = creation_order(ordered_records("ipvsadm-traffic.jsonl"))
    snap = {"size": 4096, "services": [by_key[k] for k in services]}
    for s in snap["services"]:
        s["dests"].sort(key=lambda d: order[(s["proto"], s["vip"], s["port"])].index(d["addr"]))
    return snap


@pytest.mark.parametrize("case, kw, counters", [
    ("L-n", {}, ("L-n-stats", "L-n-rate")),
    ("L-n-persistent-conn", {"persistent_conn": True}, ("L-n-stats", "L-n-rate")),
    ("L-n-thresholds", {"thresholds": True}, ("L-n-stats", "L-n-rate")),
    ("L-n-stats", {"stats": True}, ("L-n-stats", "L-n-rate")),
    ("L-n-stats-exact", {"stats": True, "exact": True}, ("L-n-stats-exact", "L-n-rate")),
    ("L-n-stats-2", {"stats": True}, ("L-n-stats-2", "L-n-rate")),
    ("L-n-stats-after-Z-one", {"stats": True}, ("L-n-stats-after-Z-one", "L-n-rate")),
    ("L-n-stats-after-Z", {"stats": True}, ("L-n-stats-after-Z", "L-n-rate")),
    ("L-n-rate", {"rate": True}, ("L-n-stats", "L-n-rate")),
    ("L-n-rate-exact", {"rate": True, "exact": True}, ("L-n-stats", "L-n-rate-exact")),
])  # fmt: skip
def test_traffic_listings(t, case, kw, counters):
    snap = traffic_snapshot(t, *counters)
    assert format_services(snap, fmt(numeric=True, **kw)) == out(t[case])


def test_traffic_nosort(t):
    snap = traffic_snapshot(t)
    assert format_services(snap, fmt(numeric=True, nosort=True), netns_hash=NETNS_HASH) == out(t["L-n-nosort"])


CONN_LINE = re.compile(r"(\w+) +(\d+):(\d\d) +(\w+) +(\S+) +(\S+) +(\S+)$")


def conns_from(text):
    """Connections back from -L -c lines (port names through PORT_NAMES), half a second
    more than shown (the listing shows whole seconds)."""
    conns = []
    for line in text.splitlines()[2:]:
        proto, mm, ss, state, c, v, d = CONN_LINE.match(line).groups()
        (ca, cp), (va, vp), (da, dp) = split_addr(c), split_addr(v), split_addr(d)
        conns.append({"proto": proto, "expires": int(mm) * 60 + int(ss) + 0.5, "state": state, "caddr": ca,
                      "cport": cp, "vaddr": va, "vport": vp, "daddr": da, "dport": dp,
                      "template": state == "ASSURED", "pe_name": None, "pe_data": None})
    return conns


def test_traffic_connection_lines_by_hand(t):
    conns = [
        {"proto": "TCP", "expires": 106.9, "state": "TIME_WAIT", "caddr": "10.0.0.47", "cport": 43289,
         "vaddr": "10.0.0.100", "vport": 2029, "daddr": "10.0.1.3", "dport": 80, "template": False},
        {"proto": "TCP", "expires": 898.2, "state": "ESTABLISHED", "caddr": "10.0.0.1", "cport": 40495,
         "vaddr": "10.0.0.102", "vport": 3002, "daddr": "10.0.1.1", "dport": 80, "template": False},
        {"proto": "TCP", "expires": 58.0, "state": "ASSURED", "caddr": "10.0.0.2", "cport": 0,
         "vaddr": "10.0.0.100", "vport": 3000, "daddr": "10.0.1.1", "dport": 80, "template": True},
        {"proto": "UDP", "expires": 298.7, "state": "UDP", "caddr": "10.0.0.5", "cport": 48936,
         "vaddr": "10.0.0.103", "vport": 3003, "daddr": "10.0.1.1", "dport": 5353, "template": False},
    ]
    got = format_connections(conns, fmt(numeric=True, connection=True)).splitlines()
    want = out(t["L-n-c"]).splitlines()
    assert got[:3] == want[:3]
    for line in got[3:]:
        assert line in want
    pe = format_connections(conns, fmt(numeric=True, connection=True, persistent_conn=True)).splitlines()
    assert pe[:3] == out(t["L-n-c-persistent-conn"]).splitlines()[:3]


@pytest.mark.parametrize("case, kw", [
    ("L-n-c", {"numeric": True}),
    ("L-n-c-exact", {"numeric": True, "exact": True}),
    ("L-n-c-persistent-conn", {"numeric": True, "persistent_conn": True}),
    ("L-n-c-final", {"numeric": True}),
    ("L-c", {}),
])  # fmt: skip
def test_traffic_connections(t, case, kw):
    text = out(t[case])
    conns = conns_from(text)
    assert len(conns) > 1000 and {c["state"] for c in conns} >= {"TIME_WAIT", "ESTABLISHED", "ASSURED", "UDP"}
    assert format_connections(conns, fmt(connection=True, **kw), resolve=NAMES) == text
