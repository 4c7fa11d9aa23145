"""One parsed ipvsadm invocation, as plain data (it crosses the control socket as JSON).

``pylvs.ipvsadm.grammar.parse(argv)`` makes a ``Command`` (or raises ``ParseError``);
the director applies the table commands (``pylvs.ipvsadm.table``); the listings format
what it reports (``pylvs.ipvsadm.listing``).  Field names follow ipvsadm 1.31's
``struct ipvs_command_entry`` where it has one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The commands (ipvsadm.c CMD_*), by the long option that names them.
ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE = "add-service", "edit-service", "delete-service"
FLUSH, RESTORE, SAVE = "clear", "restore", "save"
ADD_DEST, EDIT_DEST, DEL_DEST = "add-server", "edit-server", "delete-server"
LIST, ZERO, TIMEOUT = "list", "zero", "set"
START_DAEMON, STOP_DAEMON = "start-daemon", "stop-daemon"
HELP, VERSION = "help", "version"
TABLE_COMMANDS = (ADD_SERVICE, EDIT_SERVICE, DEL_SERVICE, FLUSH, ADD_DEST, EDIT_DEST, DEL_DEST)

# Forwarding methods, by lvs.cf's `network` words (ipvsadm -m / -g / -i).
MASQ, ROUTE, TUNNEL = "nat", "direct", "tunnel"
FORWARD_DEFAULT = ROUTE  # ipvsadm: -g is the default

# Exit code of every error the kernel reports (ipvsadm.c: fail(2, ...) for its own
# checks, exit(1) only for an absent service in a listing, else the kernel's -1 = 255).
RC_KERNEL = 255
NO_SERVICE = "No such service"  # libipvs ipvs_strerror: ESRCH for -E, -Z, and -L of one service

# Scheduler flags (ipvsadm -b): IP_VS_SVC_F_SCHED1..3 as bits 1, 2, 4 of sched_flags.
SCHED_FLAG_1, SCHED_FLAG_2, SCHED_FLAG_3 = 1, 2, 4


@dataclass
class ServiceSpec:
    """A virtual service and its options (-t/-u/--sctp-service/-f, -s, -p, -M, -b, -o, --pe)."""

    protocol: str = ""  # "tcp", "udp", "sctp"; "" for a firewall-mark service
    address: str = ""  # the address as resolved (dotted quad, or IPv6 text)
    port: int = 0
    fwmark: int = 0
    af: int = 4  # 6: an IPv6 address, or -6 with -f
    scheduler: str | None = None  # None: not given (wlc on -A)
    persistent: int | None = None  # seconds; None: not persistent
    netmask: str | None = None  # -M, as given
    sched_flags: int = 0  # SCHED_FLAG_* bits
    ops: bool = False  # -o
    pe: str | None = None  # --pe


@dataclass
class DestSpec:
    """A real server and its options (-r, -m/-g/-i, -w, -x, -y, --tun-*)."""

    address: str = ""
    port: int | None = None  # None: not given (the service's port)
    af: int = 4
    forward: str | None = None  # MASQ/ROUTE/TUNNEL; None: not given (-g)
    weight: int | None = None  # None: not given (1)
    u_threshold: int | None = None
    l_threshold: int | None = None
    tun_type: str | None = None  # "ipip", "gue", "gre"
    tun_port: int | None = None
    tun_flags: str | None = None  # "nocsum", "csum", "remcsum"


@dataclass
class DaemonSpec:
    """--start-daemon/--stop-daemon and their options."""

    state: str = ""  # "master" or "backup"
    mcast_interface: str | None = None
    syncid: int | None = None
    sync_maxlen: int | None = None
    mcast_group: str | None = None
    mcast_port: int | None = None
    mcast_ttl: int | None = None


@dataclass
class ListFormat:
    """The list modifiers (-n -c --stats --rate --thresholds --persistent-conn --exact
    --sort --nosort --tun-info --timeout --daemon -j)."""

    numeric: bool = False
    connection: bool = False
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    exact: bool = False
    nosort: bool = False
    tun_info: bool = False
    timeout: bool = False
    daemon: bool = False
    json: bool = False


@dataclass
class Command:
    command: str
    service: ServiceSpec | None = None  # None: no virtual-service option given
    dest: DestSpec | None = None  # None: no -r given
    daemon: DaemonSpec | None = None
    list: ListFormat = field(default_factory=ListFormat)
    timeouts: tuple[int, int, int] | None = None  # --set tcp tcpfin udp
    given: tuple[str, ...] = ()  # long names of the options given (-e resets the others)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Command:
        def build(kind, v):
            return None if v is None else kind(**{f.name: v[f.name] for f in fields(kind) if f.name in v})

        return cls(command=d["command"], service=build(ServiceSpec, d.get("service")),
                   dest=build(DestSpec, d.get("dest")), daemon=build(DaemonSpec, d.get("daemon")),
                   list=build(ListFormat, d.get("list")) or ListFormat(),
                   timeouts=tuple(d["timeouts"]) if d.get("timeouts") is not None else None,
                   given=tuple(d.get("given", ())))  # fmt: skip


def spec_key(s: ServiceSpec) -> tuple:
    """A service's identity: ("fwmark", mark) or (protocol, address, port)."""
    return ("fwmark", s.fwmark) if s.fwmark else (s.protocol, s.address, s.port)
