"""ipvsadm's table commands applied to the director's model: kernel IPVS semantics over a
``Config``.

    config = apply(config, command)      # a new Config, or IpvsError (config untouched)

The running director's table is a ``Config``: what lvs.cf gave, then what pylvsadm
changed.  ``apply`` never edits its argument (Config is frozen): the director compiles
the result and swaps it in (compile-then-swap), or keeps the old one when anything
fails, so a bad command changes nothing.  Pure code: no I/O, no clock.

What each command does is what kernel IPVS does with it (net/netfilter/ipvs/ip_vs_ctl.c,
as ipvsadm 1.31 drives it, checked against ``tests/data/kernel-ipvs``):

* ``-A`` adds a service, ``-E`` replaces its scheduler, persistence, netmask and flags
  (an option left out gets its default again: ipvsadm sends every field);
* ``-a`` adds a real server at the head of the list; ``-e`` replaces its weight,
  thresholds and forwarding method (again every field: left out = the default);
  ``-d`` removes it; servers added by hand are ``manual`` (no health check);
* ``-D`` of a service that does not exist succeeds silently, as the captured kernel
  does; ``-C`` removes every service, lvs.cf's included;
* errors carry the kernel's words (libipvs's ipvs_strerror table), exit code 255.

pylvs forwards IPv4 TCP and UDP with NAT, direct routing and IPIP: IPv6, SCTP,
persistence engines, one-packet scheduling and GUE/GRE tunnels are refused with a
message that says so (docs/ipvsadm.md).
"""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

from pylvs.config.model import ANY_ADDRESS, SCHEDULERS, BoundAddress, Config, RealServer, VirtualServer
from pylvs.dataplane.tables import dest_port
from pylvs.ipvsadm import command as c

RC_KERNEL, NO_SERVICE, spec_key = c.RC_KERNEL, c.NO_SERVICE, c.spec_key
SCHEDULER_DEFAULT = "wlc"  # ipvsadm.c DEF_SCHED
WEIGHT_DEFAULT = 1  # ipvsadm.c: ce.dest.weight = 1
HOST_NETMASK = "255.255.255.255"  # ipvsadm.c: ce.svc.netmask default (one client address)
ERANGE = "Numerical result out of range"  # strerror(ERANGE): l_threshold > u_threshold

# libipvs.c ipvs_strerror: the kernel's errno per command, in ipvsadm's words.
SERVICE_EXISTS = "Service already exists"
NO_SCHEDULER = "Scheduler or persistence engine not found"
SERVICE_NOT_DEFINED = "Service not defined"
DEST_EXISTS = "Destination already exists"
NO_DEST = "No such destination"

# What pylvs does not forward, and says so (exit 255, as a kernel refusal).
REFUSE_IPV6 = "pylvs: IPv6 services are not supported (pylvs forwards IPv4 only)"
REFUSE_SCTP = "pylvs: SCTP services are not supported (pylvs forwards TCP and UDP only)"
REFUSE_PE = "pylvs: persistence engines (--pe {}) are not supported"
KERNEL_PES = ("sip",)  # the kernel's persistence engines (ip_vs_pe_sip.c): the only --pe it knows
REFUSE_OPS = "pylvs: one-packet scheduling (-o) is not supported"
REFUSE_TUN = "pylvs: --tun-type {} is not supported (pylvs tunnels with ipip only)"


class IpvsError(Exception):
    """A command the table refuses; ``str()`` is what ipvsadm prints."""

    def __init__(self, message: str, rc: int = RC_KERNEL) -> None:
        super().__init__(message)
        self.rc = rc


# --- Keys ---------------------------------------------------------------------------------

def virtual_key(v: VirtualServer) -> tuple:
    return ("fwmark", v.fwmark) if v.fwmark else (v.protocol, str(v.vip), v.port)


def find_virtual(config: Config, spec: c.ServiceSpec) -> int:
    """Index in ``config.virtuals`` of the active service ``spec`` names, -1 if none."""
    key = spec_key(spec)
    for i, v in enumerate(config.virtuals):
        if v.active and virtual_key(v) == key:
            return i
    return -1


def _dest_ident(config: Config, v: VirtualServer, s: RealServer) -> tuple[str, int]:
    return (str(s.address), dest_port(config, v, s))


def find_server(config: Config, v: VirtualServer, address: str, port: int) -> int:
    for j, s in enumerate(v.servers):
        if s.active and s.address is not None and _dest_ident(config, v, s) == (address, port):
            return j
    return -1


# --- Checks of what pylvs supports --------------------------------------------------------

def _supported_service(s: c.ServiceSpec) -> None:
    if s.af == 6:
        raise IpvsError(REFUSE_IPV6)
    if s.protocol == "sctp":
        raise IpvsError(REFUSE_SCTP)
    if s.pe:
        # An engine the kernel has not either gets the kernel's answer (ENOENT).
        raise IpvsError(REFUSE_PE.format(s.pe) if s.pe in KERNEL_PES else NO_SCHEDULER)
    if s.ops:
        raise IpvsError(REFUSE_OPS)


def _supported_dest(d: c.DestSpec) -> None:
    if d.af == 6:
        raise IpvsError(REFUSE_IPV6)
    if d.tun_type not in (None, "ipip"):
        raise IpvsError(REFUSE_TUN.format(d.tun_type))


# --- Services -----------------------------------------------------------------------------

def _service_fields(s: c.ServiceSpec) -> dict:
    """The fields -A and -E set, every one of them (left out = ipvsadm's default)."""
    sched = s.scheduler or SCHEDULER_DEFAULT
    if sched not in SCHEDULERS:
        raise IpvsError(NO_SCHEDULER)
    netmask = IPv4Address(s.netmask or HOST_NETMASK)
    return {
        "scheduler": sched,
        "persistent": s.persistent or 0,
        # The model's 0.0.0.0 means "ipvsadm's /32 default"; -M is kept as given.
        "pmask": ANY_ADDRESS if str(netmask) == HOST_NETMASK else netmask,
        "sched_flags": s.sched_flags,
    }


def _service_name(s: c.ServiceSpec) -> str:
    return f"fwm {s.fwmark}" if s.fwmark else f"{s.protocol} {s.address}:{s.port}"


def add_service(config: Config, s: c.ServiceSpec) -> Config:
    _supported_service(s)
    if find_virtual(config, s) >= 0:
        raise IpvsError(SERVICE_EXISTS)
    fields = _service_fields(s)
    taken = {v.name for v in config.virtuals}
    name, n = f"pylvsadm {_service_name(s)}", 2
    while name in taken:  # an lvs.cf virtual may have any name, even this one
        name, n = f"pylvsadm {_service_name(s)} #{n}", n + 1
    v = VirtualServer(
        name=name, active=True, manual=True,
        address=None if s.fwmark else BoundAddress(IPv4Address(s.address), ""),
        port=0 if s.fwmark else s.port, protocol=s.protocol or "tcp", fwmark=s.fwmark, **fields,
    )  # fmt: skip
    return dataclasses.replace(config, virtuals=(*config.virtuals, v))


def edit_service(config: Config, s: c.ServiceSpec) -> Config:
    _supported_service(s)
    i = find_virtual(config, s)
    if i < 0:
        raise IpvsError(NO_SERVICE)
    return _replace_virtual(config, i, dataclasses.replace(config.virtuals[i], **_service_fields(s)))


def delete_service(config: Config, s: c.ServiceSpec) -> Config:
    i = find_virtual(config, s)
    if i < 0:
        return config  # the captured kernel answers 0 (golden err-del-nosvc)
    return dataclasses.replace(config, virtuals=config.virtuals[:i] + config.virtuals[i + 1:])


def clear(config: Config) -> Config:
    """-C: every service goes; lvs.cf's inactive ones were never in the table."""
    return dataclasses.replace(config, virtuals=tuple(v for v in config.virtuals if not v.active))


def _replace_virtual(config: Config, i: int, v: VirtualServer) -> Config:
    return dataclasses.replace(config, virtuals=config.virtuals[:i] + (v,) + config.virtuals[i + 1:])


# --- Real servers -------------------------------------------------------------------------

def _dest_fields(v: VirtualServer, d: c.DestSpec) -> dict:
    """The fields -a and -e set, every one of them (left out = ipvsadm's default)."""
    _supported_dest(d)
    u, lo = d.u_threshold or 0, d.l_threshold or 0
    if lo > u:
        raise IpvsError(ERANGE)  # ip_vs_ctl.c: l_threshold > u_threshold is -ERANGE
    forward = d.forward or c.FORWARD_DEFAULT
    port = d.port
    if port is None:
        port = v.port  # ipvsadm: the service's port (a firewall-mark service's is 0)
    if forward != c.MASQ and not v.fwmark:
        port = v.port  # ipvsadm.c: direct routing and tunnels reach the virtual port
    return {"weight": WEIGHT_DEFAULT if d.weight is None else d.weight, "u_threshold": u, "l_threshold": lo,
            "forward": forward, "port": port}  # fmt: skip


def _service_of(config: Config, s: c.ServiceSpec) -> int:
    """-a/-e/-d: the index of the service ``s`` names (the kernel's ESRCH otherwise)."""
    _supported_service(s)  # before the lookup: say why, not "Service not defined"
    i = find_virtual(config, s)
    if i < 0:
        raise IpvsError(SERVICE_NOT_DEFINED)
    return i


def add_server(config: Config, s: c.ServiceSpec, d: c.DestSpec) -> Config:
    i = _service_of(config, s)
    v = config.virtuals[i]
    fields = _dest_fields(v, d)
    if find_server(config, v, d.address, fields["port"]) >= 0:
        raise IpvsError(DEST_EXISTS)
    rs = RealServer(name=f"pylvsadm {d.address}:{fields['port']}", address=IPv4Address(d.address), active=True,
                    manual=True, **fields)  # fmt: skip
    return _replace_virtual(config, i, dataclasses.replace(v, servers=(*v.servers, rs)))


def _server_index(config: Config, s: c.ServiceSpec, d: c.DestSpec) -> tuple[int, int, dict]:
    i = _service_of(config, s)
    v = config.virtuals[i]
    fields = _dest_fields(v, d)
    # The kernel finds the server by address and the port as ipvsadm computed it.
    j = find_server(config, v, d.address, fields["port"])
    if j < 0:
        raise IpvsError(NO_DEST)
    return i, j, fields


def edit_server(config: Config, s: c.ServiceSpec, d: c.DestSpec) -> Config:
    i, j, fields = _server_index(config, s, d)
    v = config.virtuals[i]
    servers = list(v.servers)
    old = servers[j]
    if old.port is None and fields["port"] == v.port:
        fields["port"] = None  # an lvs.cf server keeps following its virtual's port
    elif fields["forward"] != c.MASQ and not v.fwmark:
        fields["port"] = old.port  # forced to the virtual port anyway; lvs.cf's port is its check's
    servers[j] = dataclasses.replace(old, **fields)
    return _replace_virtual(config, i, dataclasses.replace(v, servers=tuple(servers)))


def delete_server(config: Config, s: c.ServiceSpec, d: c.DestSpec) -> Config:
    i = _service_of(config, s)
    v = config.virtuals[i]
    # -d takes the port as given (or the service's), whatever the method: ipvsadm forces
    # the virtual port for -a and -e only, so -d of rip:8080 misses a DR server on rip:80.
    port = d.port if d.port is not None else v.port
    j = find_server(config, v, d.address, port)
    if j < 0:
        raise IpvsError(NO_DEST)
    return _replace_virtual(config, i, dataclasses.replace(v, servers=v.servers[:j] + v.servers[j + 1:]))


# --- Timeouts -----------------------------------------------------------------------------

def set_timeouts(config: Config, timeouts: tuple[int, int, int]) -> Config:
    """--set tcp tcpfin udp: 0 keeps a value (ip_vs_ctl.c ip_vs_set_timeout)."""
    tcp, tcpfin, udp = timeouts
    return dataclasses.replace(config, tcp_timeout=tcp or config.tcp_timeout,
                               tcpfin_timeout=tcpfin or config.tcpfin_timeout,
                               udp_timeout=udp or config.udp_timeout)  # fmt: skip


# --- One command --------------------------------------------------------------------------

def apply(config: Config, cmd: c.Command) -> Config:
    """The table after ``cmd``; IpvsError (and ``config`` unchanged) if it is refused."""
    if cmd.command == c.FLUSH:
        return clear(config)
    if cmd.command == c.TIMEOUT:
        return set_timeouts(config, cmd.timeouts)
    if cmd.service is None:
        raise ValueError(f"{cmd.command}: no service (the grammar requires one)")
    if cmd.command == c.ADD_SERVICE:
        return add_service(config, cmd.service)
    if cmd.command == c.EDIT_SERVICE:
        return edit_service(config, cmd.service)
    if cmd.command == c.DEL_SERVICE:
        return delete_service(config, cmd.service)
    if cmd.dest is None:
        raise ValueError(f"{cmd.command}: no real server (the grammar requires one)")
    if cmd.command == c.ADD_DEST:
        return add_server(config, cmd.service, cmd.dest)
    if cmd.command == c.EDIT_DEST:
        return edit_server(config, cmd.service, cmd.dest)
    if cmd.command == c.DEL_DEST:
        return delete_server(config, cmd.service, cmd.dest)
    raise ValueError(f"{cmd.command} is not a table command")
