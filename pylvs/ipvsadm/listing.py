"""``ipvsadm -L -n``, ``--stats`` and ``--rate`` layouts, byte for byte (reference 9.4).

Input: a snapshot as ``pylvs.dataplane.forwarder.Forwarder.snapshot()`` makes it (plain
data, so the status file and tests use the same code).  Numeric output only (``-n``):
pylvs never resolves names in its views.
"""

from __future__ import annotations

import ipaddress
from typing import Any

IPVS_VERSION = "1.2.1"  # what the kernel's ip_vs reports; scripts match the banner
BANNER = "IP Virtual Server version {version} (size={size})"
HOST_MASK = "255.255.255.255"
SVC_NAME_WIDTH = 33  # "%-33s" (IPv4 names truncated to 33 chars)
DEST_FMT = "  -> %-28s %-7s %-6d %-10u %-10u"  # print_service_entry: note the trailing space
NUM_WIDTH = 9  # --stats/--rate fields: "%9llu", or "%8llu" + K/M/G/T at 10^8 and above
# print_largenum: (limit, divisor, suffix)
_LARGE = ((10**9, 10**3, "K"), (10**11, 10**6, "M"), (10**14, 10**9, "G"))


def _sort_key(svc: dict[str, Any]) -> tuple:
    # fwmark (0 first), protocol number (TCP 6 before UDP 17), address, port
    return (svc["fwmark"], 6 if svc["proto"] == "TCP" else 17, ipaddress.IPv4Address(svc["vip"]), svc["port"])


def _dest_key(d: dict[str, Any]) -> tuple:
    return (ipaddress.IPv4Address(d["addr"]), d["port"])


def _svc_name(svc: dict[str, Any]) -> str:
    if svc["fwmark"]:
        return f"FWM  {svc['fwmark']}"
    return "%-4s %s" % (svc["proto"], f"{svc['vip']}:{svc['port']}")  # noqa: UP031 (ipvsadm's format)


def _dest_name(d: dict[str, Any]) -> str:
    return f"{d['addr']}:{d['port']}"[:28]


def _largenum(i: int, exact: bool) -> str:
    if exact or i < 10**8:
        return f"{i:{NUM_WIDTH}d}"
    for limit, div, suffix in _LARGE:
        if i < limit:
            return f"{i // div:{NUM_WIDTH - 1}d}{suffix}"
    return f"{i // 10**12:{NUM_WIDTH - 1}d}T"


def _banner(snap: dict[str, Any]) -> str:
    return BANNER.format(version=IPVS_VERSION, size=snap["size"])


def _services(snap: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(snap["services"], key=_sort_key)


def format_list(snap: dict[str, Any]) -> str:
    """``ipvsadm -L -n``."""
    out = [_banner(snap), "Prot LocalAddress:Port Scheduler Flags",
           "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"]  # fmt: skip
    for svc in _services(snap):
        line = f"{_svc_name(svc)[:SVC_NAME_WIDTH]} {svc['scheduler']}"
        if svc["persistent"]:
            line += f" persistent {svc['persistent']}"
            if svc["pmask"] != HOST_MASK:
                line += f" mask {svc['pmask']}"
        out.append(line)
        for d in sorted(svc["dests"], key=_dest_key):
            out.append(DEST_FMT % (_dest_name(d), d["forward"], d["weight"], d["active"], d["inactive"]))
    return "\n".join(out) + "\n"


def _numbers(snap: dict[str, Any], header: str, part: str, names: tuple[str, ...], exact: bool) -> str:
    out = [_banner(snap), header, "  -> RemoteAddress:Port"]
    for svc in _services(snap):
        nums = "".join(_largenum(svc[part][n], exact) for n in names)
        out.append(f"{_svc_name(svc):<{SVC_NAME_WIDTH}}{nums}")
        for d in sorted(svc["dests"], key=_dest_key):
            nums = "".join(_largenum(d[part][n], exact) for n in names)
            out.append(f"  -> {_dest_name(d):<28}{nums}")
    return "\n".join(out) + "\n"


def format_stats(snap: dict[str, Any], exact: bool = False) -> str:
    """``ipvsadm -L -n --stats``."""
    header = "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
    return _numbers(snap, header, "stats", ("conns", "inpkts", "outpkts", "inbytes", "outbytes"), exact)


def format_rate(snap: dict[str, Any], exact: bool = False) -> str:
    """``ipvsadm -L -n --rate``."""
    header = "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
    return _numbers(snap, header, "rates", ("cps", "inpps", "outpps", "inbps", "outbps"), exact)
