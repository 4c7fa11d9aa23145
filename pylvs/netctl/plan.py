"""What netctl installs for a config: a pure function from lvs.cf to a Plan.

The Plan is everything the director's kernel side needs, as data: iptables-restore text
for the ``raw`` and ``mangle`` tables (nfqueue capture), an nftables JSON batch for the
``netdev pylvs`` table (afpacket capture), the addresses with their lvs.cf labels and the
sysctls.  Nothing here touches the kernel; ``pylvs.netctl.kernel`` applies a Plan.  Why
each rule sits where it does is explained in docs/netctl.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import NamedTuple

from pylvs.config.check import forward_methods, server_forward
from pylvs.config.model import ANY_ADDRESS, BoundAddress, Config, RealServer, VirtualServer

CAPTURE_NFQUEUE, CAPTURE_AFPACKET, CAPTURE_AFXDP = "nfqueue", "afpacket", "afxdp"
CAPTURES = (CAPTURE_NFQUEUE, CAPTURE_AFPACKET, CAPTURE_AFXDP)
# afxdp: the keys of the XDP program's maps (csrc/bpf/xdp_pylvs.c); protocol 0 stands for
# the ICMP errors of an address, port 0 for every port.
XDP_ICMP_ERRORS = 0
IPPROTO_NUMBERS = {"tcp": 6, "udp": 17}
XDP_SERVICES_MAX, XDP_SERVERS_MAX = 4096, 65536  # the program's map sizes (csrc/bpf/xdp_pylvs.h)

# Our iptables chains: every chain netctl creates starts with this prefix, so a crashed
# director's leftovers can be found (NetCtl.clean_stale) without a state file.
CHAIN_PREFIX = "PYLVS-"
CHAIN_RAW = "PYLVS-RAW"  # raw PREROUTING: CT --notrack
CHAIN_IN = "PYLVS-IN"  # mangle PREROUTING: client -> VIP traffic to NFQUEUE
CHAIN_OUT = "PYLVS-OUT"  # mangle FORWARD: NAT replies of the real servers to NFQUEUE
TABLES = ("raw", "mangle")  # the iptables tables we touch, in install order
FIRST, LAST = "first", "last"  # where our jump goes in the built-in chain

# The nftables table of afpacket capture (family netdev: one ingress chain per device).
NFT_FAMILY, NFT_TABLE = "netdev", "pylvs"
NFT_INGRESS_PRIORITY = 0  # any: AF_PACKET taps run before the ingress hook whatever it is
NFT_CHAIN_PREFIX = "in_"

QUEUE_MAX = 65535  # NFQUEUE --queue-num is 16 bits
# The classify pass's mark bit on a real server's packet of one of our connections (csrc/
# loop.h PL_OWNED_MARK): one high bit, clear of the small marks lvs.cf's fwmark services use.
OWNED_MARK = 0x40000000
OWNED = f"{OWNED_MARK:#x}/{OWNED_MARK:#x}"
FTP_CONTROL_PORT = 21  # ip_vs_ctl.c FTPPORT: a port-21 service also owns its VIP's data ports
HOST_PREFIXLEN = 32  # an unset vip_nmask / nat_nmask: the address alone (see docs/netctl.md)
IFNAMSIZ = 16  # kernel limit incl. NUL: labels and device names are at most 15 characters
SYSCTL_IP_FORWARD = "net.ipv4.ip_forward"
# Per-device sysctl names are written as sysctl(8) does: dots inside a device name (VLANs,
# eth0.100) become "/", so the name still splits into path components on ".".
SYSCTL_ACCEPT_LOCAL = "net.ipv4.conf.{dev}.accept_local"
# ICMP errors that may concern a forwarded connection (reference 8: from the RS side only
# these are translated); in afpacket mode the kernel's copy of these is dropped, echo kept.
ICMP_ERROR_TYPES = ("destination-unreachable", "source-quench", "time-exceeded")
PROTOCOLS = ("tcp", "udp")  # a firewall-mark service may carry either


class NetCtlError(RuntimeError):
    """Installing, changing or removing the director's kernel state failed, or a config
    cannot be captured as asked; the message says where and what the kernel answered."""


class PlanError(NetCtlError, ValueError):
    """The config cannot be captured as asked (the message names the virtual service)."""


class FrozenMap(dict):
    """A read-only dict (Plan.sysctls): hashable, picklable, equal to a dict of its items."""

    def _readonly(self, *args: object, **kwargs: object) -> None:
        raise TypeError("a Plan's mappings are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly  # type: ignore[assignment]
    __ior__ = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple:
        return (type(self), (dict(self),))


class Address(NamedTuple):
    """An address netctl brings up: ``ip addr add IP/PREFIXLEN dev DEV label LABEL``."""

    ip: str
    prefixlen: int
    dev: str
    label: str

    def __str__(self) -> str:
        return f"{self.ip}/{self.prefixlen} dev {self.dev} label {self.label}"


@dataclass(frozen=True)
class Chain:
    """One of our iptables chains: its rules (iptables-restore syntax without ``-A NAME``)
    and the built-in chain that jumps to it, first or last."""

    table: str
    name: str
    hook: str  # built-in chain holding our jump
    position: str  # FIRST or LAST
    rules: tuple[str, ...]

    @property
    def jump(self) -> str:
        """The jump rule as ``iptables -S`` prints it."""
        return f"-A {self.hook} -j {self.name}"


@dataclass(frozen=True)
class XdpKeys:
    """What the afxdp capture's XDP program redirects (pylvs.dataplane.io.afxdp):
    ``services`` (VIP, port, protocol number), port 0 = every port, protocol 0 = ICMP
    errors to the VIP; NAT ``servers`` (RIP, the port it answers from, protocol), the same
    wildcards; ``devices``, where the program goes: the VIPs' devices and (NAT) the
    nat_router's.  Addresses are dotted strings."""

    devices: tuple[str, ...] = ()
    services: tuple[tuple[str, int, int], ...] = ()
    servers: tuple[tuple[str, int, int], ...] = ()


@dataclass(frozen=True)
class Plan:
    """What to install for one config (see plan_for).  ``str(plan)`` lists it."""

    capture: str
    queue: int | tuple[int, int]
    fail_open: bool
    classify: int | None = None  # nfqueue capture: the classify pass's queue (docs/netctl.md)
    chains: tuple[Chain, ...] = ()  # nfqueue capture
    nft: str | None = None  # afpacket capture: JSON batch that (re)creates `netdev pylvs`
    xdp: XdpKeys | None = None  # afxdp capture: what the XDP program redirects
    addresses: tuple[Address, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=FrozenMap)

    @property
    def iptables(self) -> dict[str, str]:
        """iptables-restore --noflush text per table for a fresh install."""
        return {t: render_restore(t, self.chains, ()) for t in self.tables}

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(t for t in TABLES if any(c.table == t for c in self.chains))

    def nft_commands(self) -> list[dict]:
        return json.loads(self.nft)["nftables"] if self.nft else []

    def __str__(self) -> str:
        q = f"{self.queue[0]}:{self.queue[1]}" if isinstance(self.queue, tuple) else str(self.queue)
        out = [f"netctl plan: capture {self.capture}"
               + (f", queue {q}, {'fail-open' if self.fail_open else 'fail-closed'}"
                  if self.capture == CAPTURE_NFQUEUE else "")
               + (f", classify queue {self.classify}" if self.classify is not None else "")]
        out.append("addresses:")
        out += [f"  {a}" for a in self.addresses] or ["  (none)"]
        out.append("sysctls:")
        out += [f"  {k} = {v}" for k, v in self.sysctls.items()] or ["  (none)"]
        for c in self.chains:
            out.append(f"iptables -t {c.table}: {c.hook} -> {c.name} ({c.position})")
            out += [f"  -A {c.name} {r}" for r in c.rules]
        if self.xdp:
            out.append(f"xdp: devices {', '.join(self.xdp.devices) or '(none)'}")
            out += [f"  service {a}:{p} proto {k or 'icmp-errors'}" for a, p, k in self.xdp.services]
            out += [f"  server {a}:{p} proto {k or 'icmp-errors'}" for a, p, k in self.xdp.servers]
        if self.nft:
            out.append(f"nft: table {NFT_FAMILY} {NFT_TABLE}")
            for cmd in self.nft_commands():
                obj = cmd.get("add", {})
                if "chain" in obj:
                    ch = obj["chain"]
                    out.append(f"  chain {ch['name']}: hook {ch['hook']} device {ch['dev']}")
                elif "rule" in obj:
                    out.append(f"    {describe_nft_expr(obj['rule']['expr'])}")
        return "\n".join(out)


# --- rendering --------------------------------------------------------------------------------

def render_restore(table: str, new: Iterable[Chain], old: Iterable[Chain],
                   present_jumps: Iterable[str] = (), existing: Iterable[str] | None = None) -> str:
    """iptables-restore --noflush text that makes `table` hold exactly our `new` chains.

    `old`: our chains installed before (those not in `new` are removed); `present_jumps`:
    our jump rules already in the table (as ``-S`` prints them); `existing`: chain names
    that exist now (None: assume the `old` ones do).  Declaring ``:NAME`` creates or
    flushes a chain, so a table's whole change is one COMMIT, applied atomically.  Our
    jump to a LAST chain is deleted and appended again, so it stays after rules the
    operator appended since (their MARK rules must run before our queueing)."""
    new = [c for c in new if c.table == table]
    old = [c for c in old if c.table == table]
    present = set(present_jumps)
    names = {c.name for c in new}
    exists = {c.name for c in old} if existing is None else set(existing)
    lines = [f"*{table}"]
    for c in new:
        lines.append(f":{c.name} - [0:0]")
    for c in new:
        lines += [f"-A {c.name} {r}" for r in c.rules]
    for c in new:
        if c.position == FIRST:
            if c.jump not in present:
                lines.append(f"-I {c.hook} 1 -j {c.name}")
        else:
            if c.jump in present:
                lines.append(f"-D {c.hook} -j {c.name}")
            lines.append(f"-A {c.hook} -j {c.name}")
    for c in old:
        if c.name in names:
            continue
        if c.jump in present:
            lines.append(f"-D {c.hook} -j {c.name}")
        if c.name in exists:
            lines += [f"-F {c.name}", f"-X {c.name}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def describe_nft_expr(expr: list[dict]) -> str:
    """A short nft-like text of a rule's JSON expressions (for listings)."""
    parts = []
    for e in expr:
        if "match" in e:
            left, right = e["match"]["left"], e["match"]["right"]
            if "payload" in left:
                key = f"{left['payload']['protocol']} {left['payload']['field']}"
            else:
                key = f"meta {left['meta']['key']}"
            if isinstance(right, dict) and "set" in right:
                right = "{ " + ", ".join(str(x) for x in right["set"]) + " }"
            parts.append(f"{key} {right}")
        else:
            parts.append(next(iter(e)))
    return " ".join(parts)


def nft_batch(chains: Mapping[str, list[list[dict]]]) -> dict:
    """The JSON batch that atomically replaces `netdev pylvs` with one ingress chain per
    device (`chains`: device -> list of rule expressions).  ``add`` before ``delete`` makes
    the delete succeed whether or not the table exists."""
    table = {"family": NFT_FAMILY, "name": NFT_TABLE}
    cmds: list[dict] = [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}},
                        {"add": {"table": dict(table)}}]
    for dev, rules in chains.items():
        name = NFT_CHAIN_PREFIX + dev
        cmds.append({"add": {"chain": {"family": NFT_FAMILY, "table": NFT_TABLE, "name": name,
                                       "type": "filter", "hook": "ingress", "dev": dev,
                                       "prio": NFT_INGRESS_PRIORITY, "policy": "accept"}}})
        for expr in rules:
            cmds.append({"add": {"rule": {"family": NFT_FAMILY, "table": NFT_TABLE, "chain": name,
                                          "expr": expr}}})
    return {"nftables": cmds}


def nft_delete_batch() -> dict:
    """The JSON batch that removes `netdev pylvs` whether or not it exists."""
    table = {"family": NFT_FAMILY, "name": NFT_TABLE}
    return {"nftables": [{"add": {"table": dict(table)}}, {"delete": {"table": dict(table)}}]}


# --- the plan ---------------------------------------------------------------------------------

def _prefixlen(mask: IPv4Address, what: str) -> int:
    if mask == ANY_ADDRESS:
        return HOST_PREFIXLEN
    try:
        return IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        raise PlanError(f"{what}: netmask {mask} is not contiguous") from None


def _address(bound: BoundAddress, mask: IPv4Address, what: str) -> Address:
    label = bound.device
    dev = label.split(":", 1)[0]
    if not dev or not 0 < len(label) < IFNAMSIZ:
        raise PlanError(f"{what}: device {label!r} is not a usable interface[:alias] name "
                        f"(1..{IFNAMSIZ - 1} characters)")
    return Address(str(bound.ip), _prefixlen(mask, what), dev, label)


def _rport(config: Config, v: VirtualServer, s: RealServer) -> int:
    """The port a real server answers from (as pylvs.dataplane.tables.dest_port: DR and
    tunnelling force the virtual port)."""
    if server_forward(config, s) != "nat" or s.port is None:
        return v.port
    return s.port


def _nat_rips(config: Config, v: VirtualServer) -> list[tuple[str, int]]:
    """(RIP, port it answers from) of the servers of `v` reached by NAT, whose replies come
    back through the director: the active ones whose method (their own, else the file's
    network) is nat, and the sorry server when the file's network is nat (lvsd adds it
    as SORRY:VPORT with the director's method)."""
    rips = [(str(s.address), _rport(config, v, s)) for s in v.servers
            if s.active and s.address is not None and server_forward(config, s) == "nat"]
    if v.sorry_server is not None and config.network == "nat":
        rips.append((str(v.sorry_server), v.port))
    return rips


def _device(v: VirtualServer) -> str | None:
    """The base device a virtual's VIP lives on; None when unknown (a service added with
    ipvsadm may have no device: its address is the operator's business)."""
    if v.address is None or not v.address.device:
        return None
    return v.address.device.split(":", 1)[0]


def _all_ports(v: VirtualServer) -> bool:
    """Port 0, and FTP (port 21: its data connections use other ports of the VIP),
    capture every port of the protocol."""
    return v.port == 0 or (v.protocol == "tcp" and v.port == FTP_CONTROL_PORT)


def _dedupe(items: Iterable) -> tuple:
    return tuple(dict.fromkeys(items))


def _l4(proto: str, port_opt: str, port: int | None) -> str:
    s = f"-p {proto}"
    if port is not None:
        s += f" -m {proto} {port_opt} {port}"
    return s


class Reply(NamedTuple):
    """The replies of one NAT real server for one service: protocol and the port they
    come from (None: every port, for fwmark, port-0 and FTP services)."""

    rip: str
    proto: str
    port: int | None

    @property
    def match(self) -> str:
        return _l4(self.proto, "--sport", self.port)


def _replies(config: Config, v: VirtualServer) -> list[Reply]:
    """The replies of the NAT real servers of one service.  A reply of every port also
    matches the real server's own connections (the classify pass sorts them)."""
    out = []
    for rip, port in _nat_rips(config, v):
        if v.fwmark:  # marks may bundle any ports of either protocol
            out += [Reply(rip, p, None) for p in PROTOCOLS]
        else:
            out.append(Reply(rip, v.protocol, None if _all_ports(v) else port))
    return out


def _xdp_keys(config: Config, virtuals: tuple[VirtualServer, ...]) -> XdpKeys:
    devices: list[str] = []
    services: list[tuple[str, int, int]] = []
    servers: list[tuple[str, int, int]] = []
    nat = "nat" in forward_methods(config)
    for v in virtuals:
        if v.fwmark:
            raise PlanError(
                f"virtual {v.name!r} is a firewall-mark service (fwmark = {v.fwmark}): marks are set "
                "by netfilter, which AF_XDP frames never pass; use --io nfq-loop")
        if v.address is None:
            continue
        dev = _device(v)
        if dev is not None:
            devices.append(dev)
        proto = IPPROTO_NUMBERS[v.protocol]
        services += [(str(v.vip), 0 if _all_ports(v) else v.port, proto), (str(v.vip), 0, XDP_ICMP_ERRORS)]
        for rip, port in _nat_rips(config, v):
            servers += [(rip, 0 if _all_ports(v) else port, proto), (rip, 0, XDP_ICMP_ERRORS)]
    if nat and config.nat_router is not None:
        devices.append(config.nat_router.device.split(":", 1)[0])
    keys = XdpKeys(devices=_dedupe(devices), services=_dedupe(services), servers=_dedupe(servers))
    for what, rows, most in (("service", keys.services, XDP_SERVICES_MAX), ("server", keys.servers, XDP_SERVERS_MAX)):
        if len(rows) > most:
            raise PlanError(f"afxdp: {len(rows)} {what} keys (one per port and one for ICMP errors per "
                            f"address) exceed the XDP program's map of {most}")
    return keys


def _queue_target(queue: int | tuple[int, int], fail_open: bool) -> str:
    if isinstance(queue, tuple):
        lo, hi = queue
        if not 0 <= lo < hi <= QUEUE_MAX:
            raise PlanError(f"queue balance {lo}:{hi}: need 0 <= first < last <= {QUEUE_MAX}")
        t = f"-j NFQUEUE --queue-balance {lo}:{hi}"
    else:
        if not 0 <= queue <= QUEUE_MAX:
            raise PlanError(f"queue {queue}: NFQUEUE numbers are 0..{QUEUE_MAX}")
        t = f"-j NFQUEUE --queue-num {queue}"
    return t + (" --queue-bypass" if fail_open else "")


def _queue_overlaps(queue: int | tuple[int, int], other: int) -> bool:
    lo, hi = queue if isinstance(queue, tuple) else (queue, queue)
    return lo <= other <= hi


def _nfqueue_chains(config: Config, virtuals: tuple[VirtualServer, ...], target: str,
                    classify: str | None) -> tuple[Chain, ...]:
    vips = _dedupe(str(v.vip) for v in virtuals if v.vip is not None)
    nat = "nat" in forward_methods(config)
    notrack = [f"-d {vip}/32 -j CT --notrack" for vip in vips]
    queue_in: list[str] = []
    for v in virtuals:
        if v.fwmark:
            queue_in.append(f"-m mark --mark {v.fwmark} {target}")
        elif v.vip is not None:
            port = None if _all_ports(v) else v.port
            queue_in.append(f"-d {v.vip}/32 {_l4(v.protocol, '--dport', port)} {target}")
    queue_in += [f"-d {vip}/32 -p icmp {target}" for vip in vips]
    chains = []
    if nat:
        replies = _dedupe(r for v in virtuals for r in _replies(config, v))
        # A real server with a service of every port: with a classify queue, each of its
        # packets is looked up (ours: marked, untracked, queued after routing; its own:
        # tracked, routed and NATed by the kernel).  Without one, all of it is untracked.
        sorted_rips = _dedupe(r.rip for r in replies if r.port is None) if classify else ()
        by_port = [r for r in replies if r.rip not in sorted_rips]
        rips = _dedupe(r.rip for r in by_port)
        # Replies to the director itself (health checks) stay tracked: only forwarded ones.
        local = "-m addrtype ! --dst-type LOCAL"
        notrack += [f"-s {r.rip}/32 {r.match} {local} -j CT --notrack" for r in by_port]
        notrack += [f"-s {rip}/32 -p icmp {local} -j CT --notrack" for rip in rips]
        queue_out = [f"-s {r.rip}/32 {r.match} {target}" for r in by_port]
        queue_out += [f"-s {rip}/32 -p icmp {target}" for rip in rips]
        for rip in sorted_rips:
            protocols = _dedupe(r.proto for r in replies if r.rip == rip)
            notrack.append(f"-s {rip}/32 -m mark --mark {OWNED} -j CT --notrack")
            notrack += [f"-s {rip}/32 -p {p} {local} -m mark ! --mark {OWNED} {classify}"
                        for p in (*protocols, "icmp")]
            queue_out.append(f"-s {rip}/32 -m conntrack --ctstate UNTRACKED {target}")
    chains.append(Chain("raw", CHAIN_RAW, "PREROUTING", FIRST, _dedupe(notrack)))
    chains.append(Chain("mangle", CHAIN_IN, "PREROUTING", LAST, _dedupe(queue_in)))
    if nat:
        chains.append(Chain("mangle", CHAIN_OUT, "FORWARD", LAST, _dedupe(queue_out)))
    return tuple(chains)


def _m(left: dict, right: object) -> dict:
    return {"match": {"op": "==", "left": left, "right": right}}


def _ingress_rules(v: VirtualServer) -> list[list[dict]]:
    base = [_m({"meta": {"key": "protocol"}}, "ip"),
            _m({"payload": {"protocol": "ip", "field": "daddr"}}, str(v.vip)),
            _m({"meta": {"key": "l4proto"}}, v.protocol)]
    if not _all_ports(v):
        base.append(_m({"payload": {"protocol": "th", "field": "dport"}}, v.port))
    return [base + [{"drop": None}]]


def _icmp_rule(vip: str) -> list[dict]:
    return [_m({"meta": {"key": "protocol"}}, "ip"),
            _m({"payload": {"protocol": "ip", "field": "daddr"}}, vip),
            _m({"meta": {"key": "l4proto"}}, "icmp"),
            _m({"payload": {"protocol": "icmp", "field": "type"}}, {"set": list(ICMP_ERROR_TYPES)}),
            {"drop": None}]


def plan_for(config: Config, *, queue: int | tuple[int, int] = 0, capture: str = CAPTURE_NFQUEUE,
             fail_open: bool = True, classify: int | None = None) -> Plan:
    """The Plan for the active virtual services of `config` (a pure function).

    queue: NFQUEUE number (or (first, last) for --queue-balance); fail_open: packets pass
    to the kernel (--queue-bypass) when no program listens on the queue; classify: the
    queue of the classify pass (nfqueue capture; None: a NAT real server of a service of
    every port has all its forwarded traffic untracked, its own connections too); capture:
    "nfqueue" (all forwarding methods), "afxdp" (all forwarding methods, no firewall
    marks) or "afpacket" (direct routing and tunnelling).

    The forwarding method is decided per real server (its own, set by pylvsadm, else the
    file's ``network``; ``config.check.forward_methods``): NAT reply capture covers the NAT
    servers only, and the NAT pieces (nat_router address, FORWARD chain, ip_forward) come
    when some server uses NAT, the tunnel ones when some server uses tunnelling.  For an
    lvs.cf without per-server methods that is the file's ``network``, as it always was.
    A virtual added by hand (``manual``, ipvsadm -A) gets no address: as with ipvsadm, the
    operator brings its VIP up."""
    if capture not in CAPTURES:
        raise PlanError(f"capture must be one of {', '.join(CAPTURES)}, not {capture!r}")
    virtuals = config.active_virtuals()
    methods = forward_methods(config)
    nat = "nat" in methods
    if capture == CAPTURE_AFPACKET and nat:
        why = "" if config.network == "nat" else " (a real server here is forwarded by NAT)"
        raise PlanError(f"afpacket capture is for network = direct or tunnel; NAT needs nfqueue{why} "
                        "(the replies must be rewritten after routing)")

    addresses: dict[str, Address] = {}
    if nat and config.nat_router is not None:
        a = _address(config.nat_router, config.nat_nmask, "nat_router")
        addresses[a.ip] = a
    for v in virtuals:
        if v.manual:  # added with ipvsadm: the VIP is the operator's to bring up
            continue
        if v.address is not None and str(v.address.ip) not in addresses:  # pulse dedupes by address
            a = _address(v.address, v.vip_nmask, f"virtual {v.name!r}")
            addresses[a.ip] = a

    sysctls: dict[str, str] = {}
    chains: tuple[Chain, ...] = ()
    nft = None
    xdp = None
    if capture == CAPTURE_AFXDP:
        xdp = _xdp_keys(config, virtuals)
        if nat:  # the program's route lookup answers only where the kernel would forward
            sysctls[SYSCTL_IP_FORWARD] = "1"
    elif capture == CAPTURE_NFQUEUE:
        target = _queue_target(queue, fail_open)
        sort = None if classify is None else _queue_target(classify, fail_open)
        if classify is not None and _queue_overlaps(queue, classify):
            raise PlanError(f"classify queue {classify} is one of the forwarding queues")
        if virtuals:
            chains = _nfqueue_chains(config, virtuals, target, sort)
        if methods & {"nat", "tunnel"}:  # the kernel forwards the rewritten packet
            sysctls[SYSCTL_IP_FORWARD] = "1"
        if "tunnel" in methods:
            # The verdict's outer header has the director's own address as its source, and it
            # is routed as if received on the VIP's device: a martian there unless that
            # device accepts local sources (docs/netctl.md).
            for v in virtuals:
                dev = _device(v)
                # A service added by hand has no device: "all", which the kernel OR-s with
                # every device's own value (IN_DEV_ORCONF), so the VIP's device accepts too.
                dev = "all" if dev is None and v.address is not None else dev
                if dev is not None:
                    sysctls[SYSCTL_ACCEPT_LOCAL.format(dev=dev.replace(".", "/"))] = "1"
    else:
        per_dev: dict[str, list[list[dict]]] = {}
        icmp_done: set[str] = set()
        for v in virtuals:
            if v.fwmark:
                raise PlanError(
                    f"virtual {v.name!r} is a firewall-mark service (fwmark = {v.fwmark}): marks are "
                    "set by mangle rules after AF_PACKET has seen the frame, so afpacket capture "
                    "cannot serve it; use capture nfqueue")
            if v.address is None:
                continue
            dev = _device(v)
            if dev is None:
                raise PlanError(f"virtual {v.name!r} names no device for {v.vip}: afpacket capture listens "
                                "on the VIP's device; give one, or use capture nfqueue")
            rules = per_dev.setdefault(dev, [])
            rules += [r for r in _ingress_rules(v) if r not in rules]
            if str(v.vip) not in icmp_done:
                icmp_done.add(str(v.vip))
                rules.append(_icmp_rule(str(v.vip)))
        if per_dev:
            nft = json.dumps(nft_batch(per_dev), sort_keys=True)
    classify = classify if capture == CAPTURE_NFQUEUE else None
    return Plan(capture=capture, queue=queue, fail_open=fail_open, classify=classify, chains=chains, nft=nft,
                xdp=xdp, addresses=tuple(addresses.values()), sysctls=FrozenMap(sysctls))
