"""The lvs.cf data model: frozen dataclasses plus the one keyword table.

Every default below is the value piranha's parser (``lvsconfig.c``) starts from; the
reference is ``spec/lvs-reference.md`` sections 1.2 to 1.5.  ``KEYWORDS`` is the single
source of truth for keyword names, scopes, value kinds, defaults (read from the
dataclass fields, so they cannot disagree) and meanings: the parser, the dumper and the
docs test all read it.

Source line numbers are kept beside the values (``line`` on blocks, ``lines`` per
keyword) with ``compare=False`` so that equality, and therefore the
``parse(dump(c)) == c`` round trip, ignores where things were written.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

# Where pulse, lvsd and nanny look for the file (piranha globals.h CFGFILE, reference 1).
DEFAULT_CONFIG_PATH = "/etc/sysconfig/ha/lvs.cf"

ANY_ADDRESS = IPv4Address("0.0.0.0")  # piranha's "unset" address (memset 0)
# `pmask = 255.255.255.255` is turned into "unset" by piranha's parser (reference 1.3).
HOST_MASK = IPv4Address("255.255.255.255")

# Global defaults, as set by lvsParseConfig (reference 1.2).
SERVICE_DEFAULT = "lvs"
HEARTBEAT_PORT_DEFAULT = 539  # pulse's UDP heartbeat port, reference 1.2
KEEPALIVE_DEFAULT = 2  # seconds between heartbeats, reference 1.2
DEADTIME_DEFAULT = 5  # seconds of silence before the peer is dead, reference 1.2
MIN_HEARTBEAT_INTERVAL = 0.05  # pylvs allows fractions; below 50 ms a busy box would flap
NETWORK_DEFAULT = "nat"  # LVS_REDIRECT_NAT, reference 1.2
DEBUG_LEVEL_DEFAULT = "NONE"
RSH_COMMAND_DEFAULT = "rsh"
IPVSADM_DEFAULT = "/sbin/ipvsadm"  # piranha globals.h IPVSADM
SYNCD_IFACE_DEFAULT = "eth0"  # ipvsadm --mcast-interface default, reference 1.2 / 9.2
SYNCD_PORT_DEFAULT = 8848  # IP_VS_SYNC_PORT, reference 10
# pylvs extensions (not in piranha), docs/ha.md:
GARP_COUNT_DEFAULT = 5  # send_arp frames per address on takeover, reference 2.5/2.6
GARP_INTERVAL_DEFAULT = 1  # seconds between them (send_arp's sleep(1))
GARP_REFRESH_DEFAULT = 10  # seconds between re-announcements while active (0: never)
CONFIG_SYNC_PORT_DEFAULT = 539  # TCP, the heartbeat's number (the heartbeat is UDP)
CONFIG_SYNC_INTERVAL_DEFAULT = 10  # seconds between the backup's fetches
HARD_SHUTDOWN_DEFAULT = True  # lvsd shuts everything down when a nanny dies

# Virtual-server defaults, as set by lvsInitVirtualServer (reference 1.3).
VIRTUAL_PORT_DEFAULT = 80  # "http"
PROTOCOL_DEFAULT = "tcp"
SCHEDULER_DEFAULT = "wlc"  # ipvsadm's default scheduler too, reference 9.2
NANNY_TIMEOUT_DEFAULT = 10  # nanny -t: probe interval and connect/read timeout
REENTRY_DEFAULT = 180  # nanny -a: seconds a failed server must pass before re-entry
CLIENT_MONITOR_DEFAULT = "/usr/sbin/nanny"

# Real-server default (reference 1.4).
WEIGHT_DEFAULT = 1  # ipvsadm -w default, reference 9.2

# Value ranges the kernel/ipvsadm enforce (reference 9.2 / 9.3).
WEIGHT_MIN, WEIGHT_MAX = 0, 2**31 - 1  # ipvsadm 1.31 and the kernel: "illegal weight specified" outside
PORT_MIN, PORT_MAX = 0, 65535
FWMARK_MAX = 2**32 - 1  # ipvsadm -f accepts 1 ... 2^32-1
PERSISTENT_MAX = 2678400  # ipvsadm -p range 1 ... 2678400 s (31 days)
SYNCD_ID_MAX = 255  # pulse masks syncd_id to 0-255 (reference 1.2)

SERVICES = ("lvs", "fos")
NETWORKS = ("nat", "direct", "tunnel")
PROTOCOLS = ("tcp", "udp")
RESERVATION_ACTIONS = ("nothing", "preempt")

# Scheduler names accepted in `scheduler =`.  The first eight are exactly the set the
# RHEL 5 parser accepts (lvsconfig.c); the last five are modern kernel schedulers that
# pylvs implements too (reference 6.3).  Kept here, not imported from pylvs.sched, so the
# config package stands alone; a test in pylvs.sched can check the two agree.
SCHEDULERS = (
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh",  # RHEL 5 piranha / kernel 2.6.18
    "sed", "nq", "mh", "fo", "ovf",  # modern kernels (ip_vs_sed.c ... ip_vs_ovf.c)
)


@dataclass(frozen=True)
class BoundAddress:
    """`IP DEV`: an address and the interface (alias) it is brought up on."""

    ip: IPv4Address
    device: str


@dataclass(frozen=True)
class RealServer:
    """A `server NAME { ... }` block."""

    name: str
    address: IPv4Address | None = None
    active: bool = False
    weight: int = WEIGHT_DEFAULT
    port: int | None = None  # None: the enclosing virtual's (final) port
    # Set only by pylvsadm (ipvsadm -a/-e), never by lvs.cf: the forwarding method of
    # this server (None: the file's `network`), its -x/-y thresholds, and whether it was
    # added by hand (then it has no health check, as a server added with ipvsadm).
    forward: str | None = None
    u_threshold: int = 0
    l_threshold: int = 0
    manual: bool = False
    line: int = field(default=0, compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class VirtualServer:
    """A `virtual NAME { ... }` block (an IPVS virtual service)."""

    name: str
    active: bool = False
    address: BoundAddress | None = None
    vip_nmask: IPv4Address = ANY_ADDRESS
    port: int = VIRTUAL_PORT_DEFAULT
    protocol: str = PROTOCOL_DEFAULT
    fwmark: int = 0
    scheduler: str = SCHEDULER_DEFAULT
    persistent: int = 0
    pmask: IPv4Address = ANY_ADDRESS  # 0.0.0.0: unset (ipvsadm's /32 default)
    send: str | None = None
    expect: str | None = None
    use_regex: bool = False
    send_program: str | None = None
    load_monitor: str | None = None
    timeout: int = NANNY_TIMEOUT_DEFAULT
    reentry: int = REENTRY_DEFAULT
    quiesce_server: bool = False
    sorry_server: IPv4Address | None = None
    client_monitor: str = CLIENT_MONITOR_DEFAULT
    master: IPv4Address | None = None
    dirs: tuple[str, ...] = ()
    start_cmd: str | None = None
    stop_cmd: str | None = None
    servers: tuple[RealServer, ...] = ()
    # Set only by pylvsadm: ipvsadm -b scheduler flags (IP_VS_SVC_F_SCHED1..3 as bits
    # 1, 2, 4: sh/mh-fallback, sh/mh-port, flag-3), and whether the service was added by
    # hand (then pylvs brings up no address for it, as ipvsadm brings up none).
    sched_flags: int = 0
    manual: bool = False
    line: int = field(default=0, compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def vip(self) -> IPv4Address | None:
        return self.address.ip if self.address else None

    def server_port(self, server: RealServer) -> int:
        """The port a real server is reached on: its own, else the virtual's."""
        return self.port if server.port is None else server.port


@dataclass(frozen=True)
class FailoverService:
    """A `failover NAME { ... }` block (FOS mode; parsed and kept, never run)."""

    name: str
    active: bool = False
    address: BoundAddress | None = None
    vip_nmask: IPv4Address = ANY_ADDRESS
    port: int = VIRTUAL_PORT_DEFAULT
    send: str | None = None
    expect: str | None = None
    timeout: int = NANNY_TIMEOUT_DEFAULT
    reentry: int = REENTRY_DEFAULT
    start_cmd: str | None = None
    stop_cmd: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Config:
    """A whole lvs.cf file."""

    serial_no: int = 0
    service: str = SERVICE_DEFAULT
    primary: IPv4Address = ANY_ADDRESS
    primary_private: IPv4Address | None = None  # None: same as primary
    primary_shared: str | None = None
    backup_active: bool = False
    backup: IPv4Address = ANY_ADDRESS
    backup_private: IPv4Address | None = None  # None: same as backup
    backup_shared: str | None = None
    heartbeat: bool = False
    heartbeat_port: int = HEARTBEAT_PORT_DEFAULT
    keepalive: float = KEEPALIVE_DEFAULT  # pylvs takes fractions of a second too
    deadtime: float = DEADTIME_DEFAULT
    network: str = NETWORK_DEFAULT
    nat_router: BoundAddress | None = None
    nat_nmask: IPv4Address = ANY_ADDRESS
    reservation_conflict_action: str | None = None
    debug_level: str = DEBUG_LEVEL_DEFAULT
    rsh_command: str = RSH_COMMAND_DEFAULT
    sync: bool = False
    ipvsadm: str = IPVSADM_DEFAULT
    active_cmd: str | None = None
    inactive_cmd: str | None = None
    monitor_links: int = 0
    syncdaemon: bool = False
    syncd_iface: str = SYNCD_IFACE_DEFAULT
    syncd_id: int = 0
    syncd_port: int = SYNCD_PORT_DEFAULT
    syncd_unicast: bool = False
    garp_count: int = GARP_COUNT_DEFAULT
    garp_interval: float = GARP_INTERVAL_DEFAULT
    garp_refresh: float = GARP_REFRESH_DEFAULT
    config_sync: bool = False
    config_sync_secret: str | None = None
    config_sync_port: int = CONFIG_SYNC_PORT_DEFAULT
    config_sync_interval: float = CONFIG_SYNC_INTERVAL_DEFAULT
    tcp_timeout: int = 0
    tcpfin_timeout: int = 0
    udp_timeout: int = 0
    hard_shutdown: bool = HARD_SHUTDOWN_DEFAULT
    virtuals: tuple[VirtualServer, ...] = ()
    failovers: tuple[FailoverService, ...] = ()
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def primary_private_address(self) -> IPv4Address:
        """Primary's private heartbeat address: explicit, else its public one."""
        return self.primary if self.primary_private is None else self.primary_private

    @property
    def backup_private_address(self) -> IPv4Address:
        """Backup's private heartbeat address: explicit, else its public one."""
        return self.backup if self.backup_private is None else self.backup_private

    def active_virtuals(self) -> tuple[VirtualServer, ...]:
        return tuple(v for v in self.virtuals if v.active)


class Scope(enum.Enum):
    GLOBAL = "global"
    VIRTUAL = "virtual"
    SERVER = "server"
    FAILOVER = "failover"


class Kind(enum.Enum):
    """How a keyword's value tokens are read."""

    INT = "int"  # C strtol base 0: 10, 0x0a, 012 (octal)
    SECONDS = "seconds"  # a whole number as INT, or a decimal fraction (0.5): pylvs only
    BOOL = "bool"  # 0 or 1 (read as an integer first, as piranha does)
    PORT = "port"  # integer or /etc/services name (tcp)
    HOST = "host"  # dotted quad or resolvable host name
    ADDR = "addr"  # dotted quad only
    MASK = "mask"  # dotted quad netmask
    STRING = "string"  # one token, quoted if it holds blanks
    ENUM = "enum"  # one of a fixed set of words
    HOST_DEV = "host dev"  # two tokens: IP (or host name) and interface
    LIST = "list"  # [ a b ... ]
    BLOCK = "block"  # NAME { ... }


_MODEL_BY_SCOPE: dict[Scope, type] = {
    Scope.GLOBAL: Config,
    Scope.VIRTUAL: VirtualServer,
    Scope.SERVER: RealServer,
    Scope.FAILOVER: FailoverService,
}


@dataclass(frozen=True)
class Keyword:
    """One row of the keyword table."""

    name: str
    scope: Scope
    kind: Kind
    field: str  # attribute of the scope's dataclass ('' for blocks)
    meaning: str
    choices: tuple[str, ...] = ()  # for Kind.ENUM
    always_dump: bool = False  # dump writes it even at its default (as the GUI does)

    @property
    def default(self) -> Any:
        """The default, read from the dataclass so the two cannot drift."""
        if self.kind is Kind.BLOCK:
            return None
        for f in dataclasses.fields(_MODEL_BY_SCOPE[self.scope]):
            if f.name == self.field:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                    return f.default_factory()  # type: ignore[misc]
        raise LookupError(f"{self.scope.value}.{self.field} has no default")

    @property
    def default_text(self) -> str:
        """The default as lvs.cf would spell it ('unset' when there is none)."""
        value = self.default
        if self.kind is Kind.BLOCK:
            return "-"
        if value is None:
            return "unset"
        if self.field == "port" and self.scope is Scope.SERVER:
            return "unset"
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return "[ ]"
        return str(value)


def _kw(name: str, scope: Scope, kind: Kind, meaning: str, *, field_name: str | None = None,
        choices: tuple[str, ...] = (), always: bool = False) -> Keyword:
    return Keyword(name, scope, kind, name if field_name is None else field_name, meaning,
                   choices, always)


G, V, S, F = Scope.GLOBAL, Scope.VIRTUAL, Scope.SERVER, Scope.FAILOVER

# The keyword table.  Order matters: dump writes keywords in this order.
KEYWORDS: tuple[Keyword, ...] = (
    # ---- global (reference 1.2) ----
    _kw("serial_no", G, Kind.INT, "Configuration serial number; the GUI bumps it on each save.",
        always=True),
    _kw("primary", G, Kind.HOST, "Public IP of the primary router; a node whose interface owns it is the primary.",
        always=True),
    _kw("primary_private", G, Kind.HOST,
        "Primary's address on the private heartbeat network (unset: same as primary)."),
    _kw("primary_shared", G, Kind.STRING, "FOS shared-SCSI device of the primary (parsed, unused by pylvs)."),
    _kw("service", G, Kind.ENUM, "lvs (virtual servers) or fos (failover services; pylvs refuses to run it).",
        choices=SERVICES, always=True),
    _kw("backup_active", G, Kind.BOOL, "1 when a backup router exists; heartbeats are exchanged only then.",
        always=True),
    _kw("backup", G, Kind.HOST, "Public IP of the backup router.", always=True),
    _kw("backup_private", G, Kind.HOST, "Backup's address on the private heartbeat network (unset: same as backup)."),
    _kw("backup_shared", G, Kind.STRING, "FOS shared-SCSI device of the backup (parsed, unused by pylvs)."),
    _kw("heartbeat", G, Kind.BOOL, "Parsed but not read: heartbeats run whenever backup_active = 1 (as pulse)."),
    _kw("heartbeat_port", G, Kind.PORT, "UDP port heartbeats are sent to and received on.", always=True),
    _kw("keepalive", G, Kind.SECONDS, "Seconds between heartbeats (pylvs: fractions allowed, e.g. 0.2).",
        always=True),
    _kw("deadtime", G, Kind.SECONDS,
        "Seconds without a heartbeat before the peer is declared dead (pylvs: fractions allowed).", always=True),
    _kw("network", G, Kind.ENUM, "Forwarding method for every real server: nat, direct (routing) or tunnel (IPIP).",
        choices=NETWORKS, always=True),
    _kw("nat_router", G, Kind.HOST_DEV, "NAT gateway address and interface the real servers route back through."),
    _kw("nat_nmask", G, Kind.MASK, "Netmask for the nat_router address (0.0.0.0: none given)."),
    _kw("reservation_conflict_action", G, Kind.ENUM, "FOS shared-SCSI conflict handling (parsed, unused by pylvs).",
        choices=RESERVATION_ACTIONS),
    _kw("debug_level", G, Kind.STRING, "Parsed and kept; unused (as in piranha).", always=True),
    _kw("rsh_command", G, Kind.STRING, "rsh or ssh: the remote shell used when load_monitor = uptime."),
    _kw("sync", G, Kind.BOOL, "Legacy file-sync flag (parsed, unused)."),
    _kw("ipvsadm", G, Kind.STRING,
        "Path of ipvsadm in piranha (kept for compatibility; pylvs programs its own tables)."),
    _kw("active_cmd", G, Kind.STRING, "Command run when this node becomes active."),
    _kw("inactive_cmd", G, Kind.STRING, "Command run at start-up and when this node becomes inactive."),
    _kw("monitor_links", G, Kind.INT, "Non-zero: check NIC link state of the heartbeat interfaces."),
    _kw("syncdaemon", G, Kind.BOOL, "1: run the IPVS connection-sync daemon."),
    _kw("syncd_iface", G, Kind.STRING, "Interface the connection-sync multicast uses."),
    _kw("syncd_id", G, Kind.INT, "Connection-sync id (0-255)."),
    _kw("syncd_port", G, Kind.PORT, "pylvs: UDP port of the connection sync (default 8848)."),
    _kw("syncd_unicast", G, Kind.BOOL,
        "pylvs: 1 sends connection sync to the peer's private address instead of multicast 224.0.0.81."),
    _kw("garp_count", G, Kind.INT, "pylvs: gratuitous ARP frames per address on takeover (send_arp: 5)."),
    _kw("garp_interval", G, Kind.SECONDS, "pylvs: seconds between those frames (send_arp: 1)."),
    _kw("garp_refresh", G, Kind.SECONDS,
        "pylvs: seconds between re-announcements of the addresses while active (0: never)."),
    _kw("config_sync", G, Kind.BOOL, "pylvs: 1 makes the backup fetch the primary's lvs.cf (HMAC-authenticated)."),
    _kw("config_sync_secret", G, Kind.STRING, "pylvs: file holding the shared secret of config sync."),
    _kw("config_sync_port", G, Kind.PORT, "pylvs: TCP port the primary serves lvs.cf on (default 539)."),
    _kw("config_sync_interval", G, Kind.SECONDS, "pylvs: seconds between the backup's fetches."),
    _kw("tcp_timeout", G, Kind.INT, "IPVS TCP established timeout in seconds (0: keep the current value)."),
    _kw("tcpfin_timeout", G, Kind.INT, "IPVS TCP FIN_WAIT timeout in seconds (0: keep the current value)."),
    _kw("udp_timeout", G, Kind.INT, "IPVS UDP timeout in seconds (0: keep the current value)."),
    _kw("hard_shutdown", G, Kind.BOOL, "1: a dead health monitor stops every service (failover); 0: log and go on."),
    _kw("virtual", G, Kind.BLOCK, "virtual NAME { ... }: an LVS virtual service.", field_name="virtuals"),
    _kw("failover", G, Kind.BLOCK, "failover NAME { ... }: an FOS failover service.", field_name="failovers"),
    # ---- virtual (reference 1.3) ----
    _kw("active", V, Kind.BOOL, "1: the virtual service is configured; 0: it is ignored.", always=True),
    _kw("address", V, Kind.HOST_DEV, "Virtual IP and the interface alias it lives on, e.g. 192.0.2.10 eth0:1.",
        always=True),
    _kw("vip_nmask", V, Kind.MASK, "Netmask for the VIP alias (0.0.0.0: none given)."),
    _kw("port", V, Kind.PORT, "Virtual port; also the default real-server port and the health-check port.",
        always=True),
    _kw("protocol", V, Kind.ENUM, "tcp or udp.", choices=PROTOCOLS, always=True),
    _kw("fwmark", V, Kind.INT, "Non-zero: a firewall-mark service matching packets with this mark."),
    _kw("scheduler", V, Kind.ENUM, "Scheduling algorithm (ipvsadm name).", choices=SCHEDULERS, always=True),
    _kw("persistent", V, Kind.INT, "Persistence timeout in seconds (0: no persistence)."),
    _kw("pmask", V, Kind.MASK, "Persistence netmask (0.0.0.0 or 255.255.255.255: a single client address)."),
    _kw("send", V, Kind.STRING, "Health check: string sent to the real server (escapes \\r \\n \\t \\\\)."),
    _kw("expect", V, Kind.STRING, "Health check: expected start of the reply (* = any reply)."),
    _kw("use_regex", V, Kind.BOOL, "1: expect is a POSIX extended regular expression."),
    _kw("send_program", V, Kind.STRING, "Health check: external program (%h = real server IP, %p = its port)."),
    _kw("load_monitor", V, Kind.STRING, "Load probe: uptime, rup, ruptime, none or a command (unset: none)."),
    _kw("timeout", V, Kind.INT, "Seconds between health checks, also their connect/read timeout.", always=True),
    _kw("reentry", V, Kind.INT, "Seconds a failed real server must keep passing before it is re-added.",
        always=True),
    _kw("quiesce_server", V, Kind.BOOL, "1: a failed real server gets weight 0 instead of being removed."),
    _kw("sorry_server", V, Kind.ADDR, "Address used (weight 1) when no real server is up."),
    _kw("client_monitor", V, Kind.STRING, "Health monitor program in piranha (kept for compatibility)."),
    _kw("master", V, Kind.HOST, "Legacy file-sync master (parsed, unused)."),
    _kw("dirs", V, Kind.LIST, "Legacy file-sync directory list (parsed, unused)."),
    _kw("start_cmd", V, Kind.STRING, "Failover services only; no effect in a virtual block."),
    _kw("stop_cmd", V, Kind.STRING, "Failover services only; no effect in a virtual block."),
    _kw("server", V, Kind.BLOCK, "server NAME { ... }: a real server.", field_name="servers"),
    # ---- server (reference 1.4) ----
    _kw("address", S, Kind.HOST, "Real server IP address.", always=True),
    _kw("active", S, Kind.BOOL, "1: the real server is health-checked and used; 0: ignored.", always=True),
    _kw("weight", S, Kind.INT, "Weight, 0-2147483647 as ipvsadm 1.31 (0: receives no new connections).", always=True),
    _kw("port", S, Kind.PORT, "Real server port (unset: the virtual's port; ignored by direct/tunnel)."),
    # ---- failover (reference 1.5) ----
    _kw("active", F, Kind.BOOL, "1: the failover service is run (FOS mode).", always=True),
    _kw("address", F, Kind.HOST_DEV, "Service IP and the interface alias it lives on.", always=True),
    _kw("vip_nmask", F, Kind.MASK, "Netmask for the service IP alias."),
    _kw("port", F, Kind.PORT, "Port the service is checked on.", always=True),
    _kw("send", F, Kind.STRING, "Health check: string sent to the service."),
    _kw("expect", F, Kind.STRING, "Health check: expected start of the reply (* = any reply)."),
    _kw("timeout", F, Kind.INT, "Seconds between health checks.", always=True),
    _kw("reentry", F, Kind.INT, "Seconds before a failed service is trusted again.", always=True),
    _kw("start_cmd", F, Kind.STRING, "Command that starts the service on the active node."),
    _kw("stop_cmd", F, Kind.STRING, "Command that stops the service on the inactive node."),
)


def keywords_for(scope: Scope) -> dict[str, Keyword]:
    """The keywords valid in one scope, by name, in table order."""
    return {k.name: k for k in KEYWORDS if k.scope is scope}


KEYWORDS_BY_SCOPE: dict[Scope, dict[str, Keyword]] = {s: keywords_for(s) for s in Scope}
