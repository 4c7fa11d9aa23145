"""Every listing ipvsadm 1.31 prints, byte for byte, from plain data (reference section 9).

The director reports plain data (JSON-able: the status file, the control socket and the
tests use the same code); this module prints it the way ipvsadm 1.31's ``ipvsadm.c``
(``list_all``, ``list_service``, ``print_title``, ``print_service_entry``,
``print_largenum``, ``list_conn``, ``print_conn``, ``list_timeout``, ``list_daemon``) and
libipvs (``ipvs_cmp_services``, ``ipvs_cmp_dests``) print what the kernel reports.
Checked against ``tests/data/kernel-ipvs`` (tests/unit/test_ipvsadm_listing.py).

Functions:

* ``format_services(snap, fmt, service=None, *, resolve=None, netns_hash=0)``: ``ipvsadm
  -L [-n] [--stats|--rate|--thresholds|--persistent-conn|--tun-info] [--exact]
  [--nosort]``, the whole table (with the banner) or one service (``-L -t/-u/-f ...``:
  the svc dict to list; no banner).  ``--stats`` wins over ``--rate``, which wins over
  ``--thresholds``, then ``--persistent-conn``, then ``--tun-info`` (print_title's order).
* ``format_save(snap, numeric, *, resolve=None, netns_hash=0)``: ``ipvsadm -S [-n]``.
* ``format_connections(conns, fmt, *, resolve=None)``: ``ipvsadm -L -c [-n]
  [--persistent-conn]`` (``--exact`` changes nothing there).
* ``format_timeout(timeouts)``: ``ipvsadm -L --timeout``; ``format_daemon(daemons)``:
  ``ipvsadm -L --daemon``.
* ``format_json(*, snapshot=None, service=None, conns=None, timeouts=None, daemons=None,
  fmt=None, netns_hash=0)``: pylvs's ``-j/--json``, the same data as one JSON object
  with ``"version": 1`` (sort_keys, indent 1).
* ``format_list(snap)``, ``format_stats(snap, exact)``, ``format_rate(snap, exact)``:
  the ``-L -n`` / ``--stats`` / ``--rate`` shorthands of the status file and the demo.
* ``ReverseResolver`` (``SYSTEM_REVERSE_RESOLVER``): the reverse lookups of the listings without ``-n``
  (gethostbyaddr, getservbyport; a failed one prints the number).
* ``kernel_order(services, netns_hash=0)``, ``svc_hash(svc, netns_hash=0)``: the
  kernel's dump order of the services (``--nosort``) and the bucket of one.

Input.  A snapshot ``{"size": int, "services": [svc, ...]}``, services in creation
order; svc ``{"proto", "af", "vip", "port", "fwmark", "scheduler", "persistent",
"pmask", "sched_flags", "ops", "pe", "stats", "rates", "dests"}``, dests in the kernel's
list order (head first: the newest first); dest ``{"addr", "port", "forward", "weight",
"active", "inactive", "persistent", "uthreshold", "lthreshold", "tun_type", "tun_port",
"tun_flags", "stats", "rates"}``.  Optional keys default as the kernel would have them
(af 4, no flags, no pe, a Tunnel dest is ipip, thresholds and counters 0).  Connections
``{"proto", "expires" (seconds left), "state", "caddr", "cport", "vaddr", "vport",
"daddr", "dport", "template", "pe_name", "pe_data"}``.

Order.  ipvsadm sorts what the kernel dumps with glibc's qsort, a merge sort, and with
libipvs's comparators, which subtract unsigned 32-bit addresses into an ``int``: two
addresses 2^31 or more apart compare the wrong way round (192.168.0.1 sorts before
10.0.0.1 when both are there).  This module does the same (``_msort``, ``_cmp_*``) on the
kernel's dump order, so it agrees with ipvsadm even where that comparison is not an order
(then the result depends on the dump order, so on ``netns_hash`` below).

Quirks of 1.31 kept: a firewall mark prints with ``%d`` (2^31 and above negative); the
service name is cut at 33 characters and a real server's at 28 (not for IPv6), any
``address:port`` at 59; a real server's counters other than bytes wrap at 2^32 (libipvs
reads the kernel's 64-bit attributes with nla_get_u32); --rate prints a real server's
CPS/InPPS/OutPPS unabbreviated; ports of a firewall-mark service are never named; ``pe``
shows in a listing only on a persistent service, but ``--pe`` always in ``-S``.

``--nosort`` prints the kernel's dump order: ``ip_vs_svc_table`` bucket by bucket
(``ip_vs_svc_hashkey``: ``(proto ^ ntohl(addr) ^ (port >> 8) ^ port ^ ((size_t)ipvs >> 8))
& 255``, an IPv6 address folded by XOR of its four words), newest first inside a bucket
(hlist_add_head), then ``ip_vs_svc_fwm_table`` (``(fwmark ^ ((size_t)ipvs >> 8)) &
255``); real servers in list order (as given).  The ``(size_t)ipvs >> 8`` term is the low
byte of the address of the namespace's ``struct netns_ipvs``, which userspace cannot know:
``netns_hash`` (default 0) stands for it.  With 0 the order differs from a real kernel's
(the buckets come in another order; which services share a bucket and their order inside
one are right); the golden captures (init_net of a Debian 6.1 kernel) come out
byte-identical with ``netns_hash=160``.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pylvs.ipvsadm.command import ListFormat

# --- What ipvsadm prints, format by format (ipvsadm.c 1.31) -------------------------------

IPVS_VERSION = "1.2.1"  # what the kernel's ip_vs reports; scripts match the banner
BANNER_FMT = "IP Virtual Server version %s (size=%d)"  # list_all (not with -S, not for one service)

# print_title, in its order of precedence
TITLE_COLUMNS_FMT = "%-33s %8s %8s %8s %8s %8s"  # FMT_STATS and FMT_RATE
TITLE_STATS = ("Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
TITLE_RATE = ("Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
TITLE_THRESHOLDS_FMT = "%-33s %-10s %-10s %-10s %-10s"  # ends in a space
TITLE_THRESHOLDS = ("Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
TITLE_PERSISTENT_FMT = "%-33s %-9s %-11s %-10s %-10s"  # ends in a space
TITLE_PERSISTENT = ("Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn")
TITLE_DEST = "  -> RemoteAddress:Port"  # the second line of the titles above
TITLE_TUN_INFO = ("Prot LocalAddress:Port Scheduler Flags",
                  "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn")
TITLE_DEFAULT = ("Prot LocalAddress:Port Scheduler Flags",
                 "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")

# print_service_entry: the service's name
SVC_NAME_FMT = "%-4s %s"  # protocol, address:port
SVC_NAME_MAX = 33  # svc_name[33] = '\0' (not for IPv6)
FWM_NAME_FMT, FWM6_NAME_FMT = "FWM  %d", "FWM  %d IPv6"  # %d: a mark >= 2^31 prints negative in 1.31
FWM_RULE_FMT, FWM6_RULE_FMT = "-f %d", "-f %d -6"
SVC_RULE_FMT = "%s %s"  # -t/-u/--sctp-service, address:port
ADDRPORT_MAX = 59  # addrport_to_anyname: snprintf(buf, 60, ...)
DEST_NAME_MAX = 28  # dname[28] = '\0' (not for IPv6, not with -S)
TUN_INFO_MAX = 15  # fwd_tun_info: snprintf(info, 16, ...)
NA = "n/a"  # ipvsadm.c NA: --tun-info of a server that does not tunnel

# print_service_entry: the service line
SVC_LINE_FMT = "%s %s"  # name, scheduler; then " (flags)", " persistent %u", " mask ...", " pe %s", " ops"
SVC_NUMBERS_FMT = "%-33s"  # --stats/--rate: name, then five print_largenum
SVC_RULE_LINE_FMT = "-A %s -s %s"  # then " -p %u", " -M ...", " --pe %s", " -o", " -b flags"

# print_service_entry: the real-server lines (%u/%d as C prints them: every line ends in spaces)
DEST_FMT = "  -> %-28s %-7s %-6d %-10u %-10u"
DEST_TUN_INFO_FMT = "  -> %-28s %-7s %-13s %-6d %-10u %-10u"
DEST_THRESHOLDS_FMT = "  -> %-28s %-10u %-10u %-10u %-10u"
DEST_PERSISTENT_FMT = "  -> %-28s %-9u %-11u %-10u %-10u"
DEST_NUMBERS_FMT = "  -> %-28s"  # --stats: then five print_largenum
DEST_RATE_FMT = "  -> %-28s %8u %8u %8u"  # --rate: CPS, InPPS, OutPPS never abbreviated; then two print_largenum
DEST_RULE_FMT = "-a %s -r %s %s -w %d"  # print_tunnel_rule adds the tunnel options

# print_tunnel_rule / fwd_tun_info: by tun_type
TUN_RULE_SUFFIX = {"ipip": " --tun-type ipip", "gue": " --tun-type gue --tun-port %d %s", "gre": " --tun-type gre %s"}
TUN_INFO_FMT = {"ipip": "ipip", "gue": "gue:%d:%s", "gre": "gre:%s"}
TUN_FLAGS = {"nocsum": "-c", "csum": "+c", "remcsum": "r+c"}  # ipvsadm.c tunflags[]
TUN_FLAG_OPTS = {"nocsum": "--tun-nocsum", "csum": "--tun-csum", "remcsum": "--tun-remcsum"}  # tun_flags_opts[]
TUN_TYPE_DEFAULT, TUN_FLAGS_DEFAULT = "ipip", "nocsum"  # the kernel's 0 for both

FORWARD_SWITCH = {"Masq": "-m", "Tunnel": "-i", "Route": "-g", "Local": "-g"}  # fwd_switch
PROTO_OPTION = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}  # option_from_protocol
PROTO_OPTION_UNKNOWN = "--xxx-service"
PROTO_NAME_UNKNOWN = "?"  # protocol_name
PROTO_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}  # IPPROTO_*
NAMED_PROTOS = ("TCP", "UDP", "SCTP")  # port_to_service looks names up for these only

# print_sched_flags: IP_VS_SVC_F_SCHED1..3 are bits 1, 2, 4 of sched_flags
SCHED_FLAG_NAMES = {"sh": ((1, "sh-fallback"), (2, "sh-port")), "mh": ((1, "mh-fallback"), (2, "mh-port"))}
SCHED_FLAG_GENERIC = ((1, "flag-1"), (2, "flag-2"), (4, "flag-3"))
SCHED_FLAGS_MASK = 7

HOST_MASK_V4, HOST_MASK_V6 = "255.255.255.255", 128  # no " mask" / " -M" for these

# print_largenum: below 10^8 as is ("%9llu"), else "%8llu" and a unit
LARGENUM_EXACT_BELOW = 10**8
LARGENUM_UNITS = ((10**9, 10**3, "K"), (10**11, 10**6, "M"), (10**14, 10**9, "G"))
LARGENUM_TOP = (10**12, "T")

STATS_NAMES = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATES_NAMES = ("cps", "inpps", "outpps", "inbps", "outbps")
# libipvs 1.31 reads a real server's 64-bit counters with nla_get_u32 (ipvs_dests_parse_cb
# calls ipvs_parse_stats on IPVS_DEST_ATTR_STATS64): all but the byte counts wrap at 2^32.
DEST_U32_FIELDS = ("conns", "inpkts", "outpkts", "cps", "inpps", "outpps", "inbps", "outbps")

# list_conn / print_conn
CONN_BANNER = "IPVS connection entries"
CONN_TITLE_FMT = "pro expire %-11s %-18s %-18s %s"
CONN_TITLE_PE_FMT = "pro expire %-11s %-18s %-18s %-18s %-16s %s"
CONN_TITLE = ("state", "source", "virtual", "destination")
CONN_TITLE_PE = (*CONN_TITLE, "pe name", "pe_data")
CONN_FMT = "%-3s %-6s %-11s %-18s %-18s %s"
CONN_PE_FMT = "%-3s %-6s %-11s %-18s %-18s %-16s %-18s %s"  # --persistent-conn, a connection with pe data
EXPIRE_FMT = "%02d:%02d"  # minutes, seconds

TIMEOUT_FMT = "Timeout (tcp tcpfin udp): %d %d %d"  # list_timeout
DAEMON_STATES = ("master", "backup")  # list_daemon: the kernel reports the master first
DAEMON_FMT = "%s sync daemon (mcast=%s, syncid=%d"  # then the optional parts, then ")"

JSON_VERSION = 1

AF_INET, AF_INET6 = 2, 10  # the comparators compare af numbers: IPv4 first
U32 = 0xFFFFFFFF
SVC_TAB_MASK = 255  # IP_VS_SVC_TAB_SIZE - 1 (IP_VS_SVC_TAB_BITS = 8)


# --- Reverse lookups (listings without -n) --------------------------------------------------

def _system_host(addr: str) -> str | None:
    try:
        return socket.gethostbyaddr(addr)[0]
    except (OSError, UnicodeError):
        return None


def _system_service(port: int, proto: str) -> str | None:
    try:
        return socket.getservbyport(port, proto)
    except (OSError, OverflowError):
        return None


@dataclass(frozen=True)
class ReverseResolver:
    """Reverse lookups: ``host(address) -> name | None`` (ipvsadm: gethostbyaddr) and
    ``service(port, "tcp"|"udp"|"sctp") -> name | None`` (getservbyport).  None: the
    number is printed."""

    host: Callable[[str], str | None] = _system_host
    service: Callable[[int, str], str | None] = _system_service


SYSTEM_REVERSE_RESOLVER = ReverseResolver()


def _memo(resolve: ReverseResolver) -> ReverseResolver:
    """The same lookups, each asked once per listing (a connection table repeats addresses)."""
    hosts: dict[str, str | None] = {}
    services: dict[tuple[int, str], str | None] = {}

    def host(addr: str) -> str | None:
        if addr not in hosts:
            hosts[addr] = resolve.host(addr)
        return hosts[addr]

    def service(port: int, proto: str) -> str | None:
        if (port, proto) not in services:
            services[port, proto] = resolve.service(port, proto)
        return services[port, proto]

    return ReverseResolver(host, service)


# --- Numbers and names ---------------------------------------------------------------------

def _u32(x: int) -> int:
    return int(x) & U32


def _s32(x: int) -> int:
    return ((int(x) & U32) ^ 0x80000000) - 0x80000000


def _largenum(i: int, exact: bool) -> str:
    """print_largenum: 9 columns, abbreviated at 10^8 unless --exact (then wider if need be)."""
    i = int(i)
    if exact:
        return " %d" % i if len(str(i)) > 8 else "%9d" % i
    if i < LARGENUM_EXACT_BELOW:
        return "%9d" % i
    for limit, div, unit in LARGENUM_UNITS:
        if i < limit:
            return "%8d%s" % (i // div, unit)
    return "%8d%s" % (i // LARGENUM_TOP[0], LARGENUM_TOP[1])


def _ntop(af: int, addr: str) -> str:
    """inet_ntop's text of an address (glibc's inet_ntop6 for IPv6: the first longest run
    of two or more zero words is ``::``; ``::a.b.c.d`` and ``::ffff:a.b.c.d`` keep the
    dotted quad)."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return str(ip)
    b = ip.packed
    words = [int.from_bytes(b[i:i + 2], "big") for i in range(0, 16, 2)]
    best, best_len, cur, cur_len = -1, 0, -1, 0
    for i, w in enumerate([*words, 1]):  # a sentinel closes a trailing run
        if w == 0:
            cur, cur_len = (i, 1) if cur < 0 else (cur, cur_len + 1)
        elif cur >= 0:
            if best < 0 or cur_len > best_len:
                best, best_len = cur, cur_len
            cur = -1
    if best >= 0 and best_len < 2:
        best = -1
    out = ""
    for i, w in enumerate(words):
        if best >= 0 and best <= i < best + best_len:
            out += ":" if i == best else ""
            continue
        out += ":" if i else ""
        if i == 6 and best == 0 and (best_len == 6 or (best_len == 5 and words[5] == 0xFFFF)):
            return out + str(ipaddress.IPv4Address(b[12:]))
        out += "%x" % w
    return out + (":" if best >= 0 and best + best_len == 8 else "")


def _proto(obj: dict[str, Any]) -> str:
    return str(obj.get("proto") or "").upper()


def _addrport(af: int, addr: str, port: int, proto: str | None, numeric: bool, resolve: ReverseResolver) -> str:
    """addrport_to_anyname: ``a.b.c.d:port`` / ``[v6]:port``, names unless -n."""
    text = _ntop(af, addr)
    pname = str(port)
    if not numeric:
        text = resolve.host(text) or text
        if proto in NAMED_PROTOS:
            pname = resolve.service(port, proto.lower()) or pname
    if af == 6:
        return ("[%s]:%s" % (text, pname))[:ADDRPORT_MAX]
    return ("%s:%s" % (text, pname))[:ADDRPORT_MAX]


# --- Services: defaults, names, flags ------------------------------------------------------

def _af(obj: dict[str, Any], addr_key: str) -> int:
    af = obj.get("af")
    if af in (4, 6):
        return af
    addr = obj.get(addr_key)
    return 6 if addr and ":" in str(addr) else 4


def _svc_proto(svc: dict[str, Any]) -> str | None:
    """The protocol as ipvsadm sees it: none for a firewall-mark service (the kernel's
    netlink dump leaves it out), so its ports are never named."""
    return None if svc.get("fwmark") else _proto(svc)


def _svc_name(svc: dict[str, Any], rule: bool, numeric: bool, resolve: ReverseResolver) -> str:
    af = _af(svc, "vip")
    if svc.get("fwmark"):
        fmt = (FWM6_RULE_FMT if af == 6 else FWM_RULE_FMT) if rule else (FWM6_NAME_FMT if af == 6 else FWM_NAME_FMT)
        return fmt % _s32(svc["fwmark"])
    proto = _svc_proto(svc)
    vname = _addrport(af, svc["vip"], int(svc["port"]), proto, numeric, resolve)
    if rule:
        return SVC_RULE_FMT % (PROTO_OPTION.get(proto, PROTO_OPTION_UNKNOWN), vname)
    name = SVC_NAME_FMT % (proto if proto in PROTO_NUMBERS else PROTO_NAME_UNKNOWN, vname)
    return name if af == 6 else name[:SVC_NAME_MAX]


def _sched_flags(svc: dict[str, Any]) -> str:
    """print_sched_flags: the names of the set flags, comma-separated."""
    flags = int(svc.get("sched_flags") or 0)
    names = SCHED_FLAG_NAMES.get(svc["scheduler"], SCHED_FLAG_GENERIC)
    return ",".join(name for bit, name in names if flags & bit)


def _mask(svc: dict[str, Any]) -> str | None:
    """The persistence netmask when it is not a single client's (else None)."""
    pmask = svc.get("pmask")
    if pmask in (None, ""):
        return None
    if _af(svc, "vip") == 6:
        text = str(pmask)
        prefix = int(text) if text.isdigit() else bin(int(ipaddress.IPv6Address(text))).count("1")
        return None if prefix == HOST_MASK_V6 else "%i" % prefix
    text = str(ipaddress.IPv4Address(str(pmask)))
    return None if text == HOST_MASK_V4 else text


def _svc_line(svc: dict[str, Any], name: str) -> str:
    """The service line of the default, --thresholds, --persistent-conn and --tun-info listings."""
    line = SVC_LINE_FMT % (name, svc["scheduler"])
    if int(svc.get("sched_flags") or 0) & SCHED_FLAGS_MASK:
        line += " (%s)" % _sched_flags(svc)
    if svc.get("persistent"):
        line += " persistent %d" % _u32(svc["persistent"])
        mask = _mask(svc)
        if mask is not None:
            line += " mask %s" % mask
        if svc.get("pe"):  # inside the persistence branch in print_service_entry
            line += " pe %s" % svc["pe"]
    if svc.get("ops"):
        line += " ops"
    return line


def _svc_rule(svc: dict[str, Any], name: str) -> str:
    line = SVC_RULE_LINE_FMT % (name, svc["scheduler"])
    if svc.get("persistent"):
        line += " -p %d" % _u32(svc["persistent"])
        mask = _mask(svc)
        if mask is not None:
            line += " -M %s" % mask
    if svc.get("pe"):
        line += " --pe %s" % svc["pe"]
    if svc.get("ops"):
        line += " -o"
    if int(svc.get("sched_flags") or 0) & SCHED_FLAGS_MASK:
        line += " -b %s" % _sched_flags(svc)
    return line


def _counters(obj: dict[str, Any], part: str, names: tuple[str, ...], dest: bool) -> list[int]:
    values = obj.get(part) or {}
    out = [int(values.get(n, 0)) for n in names]
    if dest:
        out = [_u32(v) if n in DEST_U32_FIELDS else v for n, v in zip(names, out, strict=True)]
    return out


# --- Real servers --------------------------------------------------------------------------

def _tun(d: dict[str, Any]) -> tuple[str, int, str]:
    return (d.get("tun_type") or TUN_TYPE_DEFAULT, int(d.get("tun_port") or 0),
            d.get("tun_flags") or TUN_FLAGS_DEFAULT)  # fmt: skip


def _tun_info(d: dict[str, Any]) -> str:
    """fwd_tun_info: what --tun-info shows in its TunnelInfo column."""
    if d["forward"] != "Tunnel":
        return NA
    kind, port, flags = _tun(d)
    if kind == "gue":
        return (TUN_INFO_FMT[kind] % (port, TUN_FLAGS[flags]))[:TUN_INFO_MAX]
    if kind == "gre":
        return (TUN_INFO_FMT[kind] % TUN_FLAGS[flags])[:TUN_INFO_MAX]
    return TUN_INFO_FMT.get(kind, NA)


def _dest_rule(name: str, dname: str, d: dict[str, Any]) -> str:
    line = DEST_RULE_FMT % (name, dname, FORWARD_SWITCH.get(d["forward"], ""), _s32(d["weight"]))
    if d["forward"] != "Tunnel":
        return line
    kind, port, flags = _tun(d)
    if kind == "gue":
        return line + TUN_RULE_SUFFIX[kind] % (port, TUN_FLAG_OPTS[flags])
    if kind == "gre":
        return line + TUN_RULE_SUFFIX[kind] % TUN_FLAG_OPTS[flags]
    return line + TUN_RULE_SUFFIX.get(kind, "")


def _dest_line(d: dict[str, Any], dname: str, mode: str, exact: bool) -> str:
    act, inact = _u32(d.get("active", 0)), _u32(d.get("inactive", 0))
    if mode == "stats":
        nums = _counters(d, "stats", STATS_NAMES, dest=True)
        return DEST_NUMBERS_FMT % dname + "".join(_largenum(v, exact) for v in nums)
    if mode == "rate":
        cps, inpps, outpps, inbps, outbps = _counters(d, "rates", RATES_NAMES, dest=True)
        return DEST_RATE_FMT % (dname, cps, inpps, outpps) + _largenum(inbps, exact) + _largenum(outbps, exact)
    if mode == "thresholds":
        return DEST_THRESHOLDS_FMT % (dname, _u32(d.get("uthreshold", 0)), _u32(d.get("lthreshold", 0)), act, inact)
    if mode == "persistent_conn":
        return DEST_PERSISTENT_FMT % (dname, _u32(d["weight"]), _u32(d.get("persistent", 0)), act, inact)
    if mode == "tun_info":
        return DEST_TUN_INFO_FMT % (dname, d["forward"], _tun_info(d), _s32(d["weight"]), act, inact)
    return DEST_FMT % (dname, d["forward"], _s32(d["weight"]), act, inact)


# --- Order: the kernel's dump, ipvsadm's sort ----------------------------------------------

def _words(af: int, addr: str | None) -> tuple[int, int, int, int]:
    """union nf_inet_addr as four host-order words (an IPv4 address in the first)."""
    if not addr:
        return (0, 0, 0, 0)
    b = ipaddress.ip_address(addr).packed
    if len(b) == 4:
        return (int.from_bytes(b, "big"), 0, 0, 0)
    return tuple(int.from_bytes(b[i:i + 4], "big") for i in range(0, 16, 4))  # type: ignore[return-value]


def _addr_cmp(af: int, w1: tuple[int, ...], w2: tuple[int, ...]) -> int:
    # ntohl(a) - ntohl(b) as an int: unsigned subtraction, wrapped
    if af == 6:
        for a, b in zip(w1, w2, strict=True):
            r = _s32(a - b)
            if r:
                return r
        return 0
    return _s32(w1[0] - w2[0])


def _svc_key(svc: dict[str, Any]) -> tuple:
    af = _af(svc, "vip")
    fwmark = _u32(svc.get("fwmark") or 0)
    if fwmark:  # libipvs leaves protocol, address and port 0 for a firewall-mark service
        return (fwmark, AF_INET6 if af == 6 else AF_INET, 0, (0, 0, 0, 0), 0)
    return (0, AF_INET6 if af == 6 else AF_INET, PROTO_NUMBERS.get(_proto(svc), 0), _words(af, svc["vip"]),
            int(svc["port"]))  # fmt: skip


def _cmp_services(k1: tuple, k2: tuple) -> int:
    """libipvs ipvs_cmp_services: fwmark, af, protocol, address, port."""
    r = _s32(k1[0] - k2[0])
    if r:
        return r
    if k1[1] != k2[1]:
        return k1[1] - k2[1]
    if k1[2] != k2[2]:
        return k1[2] - k2[2]
    r = _addr_cmp(6 if k1[1] == AF_INET6 else 4, k1[3], k2[3])
    return r if r else k1[4] - k2[4]


def _cmp_dests(k1: tuple, k2: tuple) -> int:
    """libipvs ipvs_cmp_dests: address (as the first one's family), port."""
    r = _addr_cmp(k1[0], k1[1], k2[1])
    return r if r else k1[2] - k2[2]


def _msort(keys: list, cmp: Callable[[Any, Any], int]) -> list[int]:
    """glibc qsort (msort_with_tmp): top-down merge sort, n/2 on the left, the left one on
    ties.  Returns the indices in sorted order."""

    def sort(idx: list[int]) -> list[int]:
        if len(idx) <= 1:
            return idx
        left, right = sort(idx[: len(idx) // 2]), sort(idx[len(idx) // 2:])
        out, i, j = [], 0, 0
        while i < len(left) and j < len(right):
            if cmp(keys[left[i]], keys[right[j]]) <= 0:
                out.append(left[i])
                i += 1
            else:
                out.append(right[j])
                j += 1
        return out + left[i:] + right[j:]

    return sort(list(range(len(keys))))


def svc_hash(svc: dict[str, Any], netns_hash: int = 0) -> tuple[int, int]:
    """(table, bucket) of a service in the kernel: (0, ip_vs_svc_hashkey) or, for a
    firewall mark, (1, ip_vs_svc_fwm_hashkey)."""
    if svc.get("fwmark"):
        return (1, (netns_hash ^ _u32(svc["fwmark"])) & SVC_TAB_MASK)
    w = _words(_af(svc, "vip"), svc["vip"])
    fold = w[0] ^ w[1] ^ w[2] ^ w[3]
    port = int(svc["port"])
    return (0, (PROTO_NUMBERS.get(_proto(svc), 0) ^ fold ^ netns_hash ^ (port >> 8) ^ port) & SVC_TAB_MASK)


def kernel_order(services: Sequence[dict[str, Any]], netns_hash: int = 0) -> list[dict[str, Any]]:
    """Services (given in creation order) in the order the kernel dumps them (--nosort)."""
    order = sorted(range(len(services)), key=lambda i: (*svc_hash(services[i], netns_hash), -i))
    return [services[i] for i in order]


def _sorted_services(snap: dict[str, Any], nosort: bool, netns_hash: int) -> list[dict[str, Any]]:
    dumped = kernel_order(snap.get("services", []), netns_hash)
    if nosort:
        return dumped
    return [dumped[i] for i in _msort([_svc_key(s) for s in dumped], _cmp_services)]


def _sorted_dests(svc: dict[str, Any], nosort: bool) -> list[dict[str, Any]]:
    dests = list(svc.get("dests", []))
    if nosort:
        return dests
    keys = [(_af(d, "addr"), _words(_af(d, "addr"), d["addr"]), int(d["port"])) for d in dests]
    return [dests[i] for i in _msort(keys, _cmp_dests)]


# --- The listings --------------------------------------------------------------------------

def _mode(fmt: ListFormat) -> str:
    """Which layout: print_title's and print_service_entry's order of precedence."""
    for mode in ("stats", "rate", "thresholds", "persistent_conn", "tun_info"):
        if getattr(fmt, mode):
            return mode
    return "default"


def _title(mode: str) -> list[str]:
    if mode == "stats":
        return [TITLE_COLUMNS_FMT % TITLE_STATS, TITLE_DEST]
    if mode == "rate":
        return [TITLE_COLUMNS_FMT % TITLE_RATE, TITLE_DEST]
    if mode == "thresholds":
        return [TITLE_THRESHOLDS_FMT % TITLE_THRESHOLDS, TITLE_DEST]
    if mode == "persistent_conn":
        return [TITLE_PERSISTENT_FMT % TITLE_PERSISTENT, TITLE_DEST]
    if mode == "tun_info":
        return list(TITLE_TUN_INFO)
    return list(TITLE_DEFAULT)


def _service_entry(svc: dict[str, Any], fmt: ListFormat, mode: str, rule: bool, resolve: ReverseResolver) -> list[str]:
    """print_service_entry: the service line and its real servers."""
    numeric = fmt.numeric
    name = _svc_name(svc, rule, numeric, resolve)
    if rule:
        out = [_svc_rule(svc, name)]
    elif mode in ("stats", "rate"):
        part, names = ("stats", STATS_NAMES) if mode == "stats" else ("rates", RATES_NAMES)
        out = [SVC_NUMBERS_FMT % name + "".join(_largenum(v, fmt.exact) for v in _counters(svc, part, names, False))]
    else:
        out = [_svc_line(svc, name)]
    proto = _svc_proto(svc)
    for d in _sorted_dests(svc, fmt.nosort and not rule):
        daf = _af(d, "addr")
        dname = _addrport(daf, d["addr"], int(d["port"]), proto, numeric, resolve)
        if rule:
            out.append(_dest_rule(name, dname, d))
        else:
            out.append(_dest_line(d, dname if daf == 6 else dname[:DEST_NAME_MAX], mode, fmt.exact))
    return out


def format_services(snap: dict[str, Any], fmt: ListFormat | None = None, service: dict[str, Any] | None = None,
                    *, resolve: ReverseResolver | None = None, netns_hash: int = 0) -> str:  # fmt: skip
    """``ipvsadm -L``: the whole table (list_all: banner, title, every service) or, with
    ``service``, that one (list_service: title and the service; no banner)."""
    fmt = fmt or ListFormat()
    resolve = _memo(resolve or SYSTEM_REVERSE_RESOLVER)
    mode = _mode(fmt)
    out = [] if service is not None else [BANNER_FMT % (IPVS_VERSION, int(snap.get("size", 0)))]
    out += _title(mode)
    services = [service] if service is not None else _sorted_services(snap, fmt.nosort, netns_hash)
    for svc in services:
        out += _service_entry(svc, fmt, mode, False, resolve)
    return "\n".join(out) + "\n"


def format_save(snap: dict[str, Any], numeric: bool = False, *, resolve: ReverseResolver | None = None,
                netns_hash: int = 0) -> str:  # fmt: skip
    """``ipvsadm -S [-n]``: the table as -A/-a commands (sorted; nothing for an empty table)."""
    fmt = ListFormat(numeric=numeric)
    resolve = _memo(resolve or SYSTEM_REVERSE_RESOLVER)
    out = []
    for svc in _sorted_services(snap, False, netns_hash):
        out += _service_entry(svc, fmt, "default", True, resolve)
    return "".join(line + "\n" for line in out)


def format_list(snap: dict[str, Any]) -> str:
    """``ipvsadm -L -n``."""
    return format_services(snap, ListFormat(numeric=True))


def format_stats(snap: dict[str, Any], exact: bool = False) -> str:
    """``ipvsadm -L -n --stats [--exact]``."""
    return format_services(snap, ListFormat(numeric=True, stats=True, exact=exact))


def format_rate(snap: dict[str, Any], exact: bool = False) -> str:
    """``ipvsadm -L -n --rate [--exact]``."""
    return format_services(snap, ListFormat(numeric=True, rate=True, exact=exact))


# --- Connections ---------------------------------------------------------------------------

def _expires(conn: dict[str, Any]) -> int:
    # /proc/net/ip_vs_conn: (timer.expires - jiffies) / HZ, whole seconds left (an entry past
    # its time is not listed: 0 here rather than the kernel's unsigned wrap)
    return int(max(0.0, float(conn.get("expires") or 0)))


def _conn_af(addr: str) -> int:
    return 6 if ipaddress.ip_address(addr).version == 6 else 4


def format_connections(conns: Sequence[dict[str, Any]], fmt: ListFormat | None = None, *,
                       resolve: ReverseResolver | None = None) -> str:  # fmt: skip
    """``ipvsadm -L -c [-n] [--persistent-conn]``, connections in the order given (the
    kernel's table order); templates are listed like connections."""
    fmt = fmt or ListFormat()
    resolve = _memo(resolve or SYSTEM_REVERSE_RESOLVER)
    pe = fmt.persistent_conn
    out = [CONN_BANNER, CONN_TITLE_PE_FMT % CONN_TITLE_PE if pe else CONN_TITLE_FMT % CONN_TITLE]
    for c in conns:
        proto = _proto(c)
        af = _conn_af(c["caddr"])  # print_conn: the client's family for client and virtual
        cname = _addrport(af, c["caddr"], int(c["cport"]), proto, fmt.numeric, resolve)
        vname = _addrport(af, c["vaddr"], int(c["vport"]), proto, fmt.numeric, resolve)
        dname = _addrport(_conn_af(c["daddr"]), c["daddr"], int(c["dport"]), proto, fmt.numeric, resolve)
        minutes, seconds = divmod(_expires(c), 60)
        expire = EXPIRE_FMT % (minutes, seconds)
        # sscanf of the /proc line finds 11 fields only when the kernel printed pe data
        if pe and c.get("pe_name") and c.get("pe_data"):
            out.append(CONN_PE_FMT % (c["proto"], expire, c["state"], cname, vname, dname, c["pe_name"], c["pe_data"]))
        else:
            out.append(CONN_FMT % (c["proto"], expire, c["state"], cname, vname, dname))
    return "\n".join(out) + "\n"


# --- Timeouts, sync daemons ----------------------------------------------------------------

def format_timeout(timeouts: Sequence[int]) -> str:
    """``ipvsadm -L --timeout``: ``(tcp, tcpfin, udp)`` seconds."""
    tcp, tcpfin, udp = timeouts
    return TIMEOUT_FMT % (int(tcp), int(tcpfin), int(udp)) + "\n"


def _daemons(daemons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for state in DAEMON_STATES for d in daemons if d.get("state") == state]


def format_daemon(daemons: Sequence[dict[str, Any]]) -> str:
    """``ipvsadm -L --daemon``: one line per running sync daemon, master first; a part
    the kernel reports as 0 (or no group) is left out."""
    out = []
    for d in _daemons(daemons):
        line = DAEMON_FMT % (d["state"], d.get("mcast_interface") or "", int(d.get("syncid") or 0))
        if d.get("sync_maxlen"):
            line += ", maxlen=%d" % _u32(d["sync_maxlen"])
        if d.get("mcast_group"):
            group = str(d["mcast_group"])
            line += ", group=%s" % _ntop(_conn_af(group), group)
        if d.get("mcast_port"):
            line += ", port=%d" % _u32(d["mcast_port"])
        if d.get("mcast_ttl"):
            line += ", ttl=%d" % _u32(d["mcast_ttl"])
        out.append(line + ")\n")
    return "".join(out)


# --- JSON (pylvs's -j/--json) --------------------------------------------------------------

def _json_dest(d: dict[str, Any]) -> dict[str, Any]:
    tunnel = d["forward"] == "Tunnel"
    kind = (d.get("tun_type") or TUN_TYPE_DEFAULT) if tunnel else None
    return {
        "addr": _ntop(_af(d, "addr"), d["addr"]), "port": int(d["port"]), "forward": d["forward"],
        "weight": int(d["weight"]), "active": int(d.get("active", 0)), "inactive": int(d.get("inactive", 0)),
        "persistent": int(d.get("persistent", 0)), "uthreshold": int(d.get("uthreshold", 0)),
        "lthreshold": int(d.get("lthreshold", 0)), "tun_type": kind,
        "tun_port": int(d.get("tun_port") or 0) if kind == "gue" else None,
        "tun_flags": (d.get("tun_flags") or TUN_FLAGS_DEFAULT) if kind in ("gue", "gre") else None,
        "stats": dict(zip(STATS_NAMES, _counters(d, "stats", STATS_NAMES, False), strict=True)),
        "rates": dict(zip(RATES_NAMES, _counters(d, "rates", RATES_NAMES, False), strict=True)),
    }  # fmt: skip


def _json_service(svc: dict[str, Any], nosort: bool) -> dict[str, Any]:
    af = _af(svc, "vip")
    fwmark = int(svc.get("fwmark") or 0)
    return {
        "proto": _proto(svc), "af": af, "vip": None if fwmark else _ntop(af, svc["vip"]),
        "port": 0 if fwmark else int(svc["port"]), "fwmark": fwmark, "scheduler": svc["scheduler"],
        "persistent": int(svc.get("persistent") or 0),
        "pmask": _mask(svc) or (str(HOST_MASK_V6) if af == 6 else HOST_MASK_V4),  # IPv6: a prefix length
        "sched_flags": int(svc.get("sched_flags") or 0), "ops": bool(svc.get("ops")), "pe": svc.get("pe") or None,
        "stats": dict(zip(STATS_NAMES, _counters(svc, "stats", STATS_NAMES, False), strict=True)),
        "rates": dict(zip(RATES_NAMES, _counters(svc, "rates", RATES_NAMES, False), strict=True)),
        "dests": [_json_dest(d) for d in _sorted_dests(svc, nosort)],
    }  # fmt: skip


def _json_conn(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "proto": c["proto"], "expires": _expires(c), "state": c["state"],
        "caddr": _ntop(_conn_af(c["caddr"]), c["caddr"]), "cport": int(c["cport"]),
        "vaddr": _ntop(_conn_af(c["vaddr"]), c["vaddr"]), "vport": int(c["vport"]),
        "daddr": _ntop(_conn_af(c["daddr"]), c["daddr"]), "dport": int(c["dport"]),
        "template": bool(c.get("template")), "pe_name": c.get("pe_name") or None, "pe_data": c.get("pe_data") or None,
    }  # fmt: skip


def format_json(*, snapshot: dict[str, Any] | None = None, service: dict[str, Any] | None = None,
                conns: Sequence[dict[str, Any]] | None = None, timeouts: Sequence[int] | None = None,
                daemons: Sequence[dict[str, Any]] | None = None, fmt: ListFormat | None = None,
                netns_hash: int = 0) -> str:  # fmt: skip
    """pylvs's ``-j/--json``: what one listing shows, as JSON with ``"version": 1``.

    Exactly one of: ``snapshot`` (``-L``: ``{"ipvs_version", "size", "services"}``, in
    the listing's order), ``service`` (``-L -t ...``: ``{"service"}``), ``conns``
    (``-L -c``: ``{"connections"}``), ``timeouts`` (``{"timeout": {"tcp", "tcpfin",
    "udp"}}``), ``daemons`` (``{"daemon": [...]}``, master first).  Every field is there
    whatever the list modifiers (only ``--nosort`` changes the order); numbers are exact.
    """
    nosort = bool(fmt and fmt.nosort)
    asked = [x is not None for x in (snapshot if service is None else None, service, conns, timeouts, daemons)]
    if sum(asked) != 1:
        raise ValueError("format_json: give exactly one of snapshot, service, conns, timeouts, daemons")
    doc: dict[str, Any] = {"version": JSON_VERSION}
    if service is not None:
        doc["service"] = _json_service(service, nosort)
    elif snapshot is not None:
        doc["ipvs_version"] = IPVS_VERSION
        doc["size"] = int(snapshot.get("size", 0))
        doc["services"] = [_json_service(s, nosort) for s in _sorted_services(snapshot, nosort, netns_hash)]
    elif conns is not None:
        doc["connections"] = [_json_conn(c) for c in conns]
    elif timeouts is not None:
        doc["timeout"] = dict(zip(("tcp", "tcpfin", "udp"), (int(t) for t in timeouts), strict=True))
    else:
        doc["daemon"] = [{k: d.get(k) for k in ("state", "mcast_interface", "syncid", "sync_maxlen", "mcast_group",
                                                "mcast_port", "mcast_ttl")} for d in _daemons(daemons or [])]
    return json.dumps(doc, sort_keys=True, indent=1) + "\n"
