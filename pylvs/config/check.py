"""Semantic checks on a parsed Config, and the library entry points the daemons use.

Parsing (parse.py) reports what the grammar rejects; this module reports what the
grammar accepts but a director cannot run, or runs differently from what the file says,
or is very likely an operator mistake.  Each finding is located at file:line and graded
(diagnostics.Severity): ERROR makes the daemon refuse the file, ADJUSTED means pylvs runs
it with a stated change (as pulse did), WARNING means it runs exactly as written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any

from pylvs.config import diagnostics as dg
from pylvs.config.diagnostics import ConfigError, Diagnostic, Severity
from pylvs.config.dump import quote_problem
from pylvs.config.model import (
    ANY_ADDRESS,
    FWMARK_MAX,
    KEYWORDS_BY_SCOPE,
    MIN_HEARTBEAT_INTERVAL,
    NETWORKS,
    PERSISTENT_MAX,
    PORT_MAX,
    PORT_MIN,
    SYNCD_ID_MAX,
    WEIGHT_MAX,
    WEIGHT_MIN,
    Config,
    FailoverService,
    Kind,
    RealServer,
    Scope,
    VirtualServer,
)
from pylvs.config.parse import ParseResult, Resolver, parse, parse_file

# ipvsadm -g / -i force the real port to the virtual port (tables.dest_port does the same).
PORT_FORCING_METHODS = ("direct", "tunnel")
THRESHOLD_MAX = 2**31 - 1  # ipvsadm -x / -y: string_to_number(optarg, 0, INT_MAX)
SCHED_FLAGS_MAX = 0x7  # ipvsadm -b: IP_VS_SVC_F_SCHED1..3 as bits 1, 2, 4


def server_forward(config: Config, server: RealServer) -> str:
    """A real server's forwarding method ("nat", "direct" or "tunnel"): its own (set by
    pylvsadm, ipvsadm -m/-g/-i), else the file's ``network``."""
    return server.forward or config.network


def forward_methods(config: Config) -> frozenset[str]:
    """The forwarding methods the active virtual services use: each active real server's
    (``server_forward``) and, for a sorry server, the file's ``network`` (lvsd adds it with
    the director's method).  With no server at all, the file's ``network`` alone, so an
    lvs.cf without per-server methods always gives ``{config.network}``."""
    methods = set()
    for v in config.active_virtuals():
        methods.update(server_forward(config, s) for s in v.servers if s.active and s.address is not None)
        if v.sorry_server is not None:
            methods.add(config.network)
    return frozenset(methods or (config.network,))


def is_contiguous_mask(mask: IPv4Address) -> bool:
    """True for netmasks of the form 1...10...0 (including 0.0.0.0 and /32)."""
    value = int(mask)
    inverted = ~value & 0xFFFFFFFF
    return inverted & (inverted + 1) == 0


def _line(obj: Any, key: str) -> int:
    """Where `key` was written in `obj`'s block, else the block's own line."""
    lines = getattr(obj, "lines", {}) or {}
    return lines.get(key, getattr(obj, "line", 0))


class _Checker:
    def __init__(self, config: Config, filename: str):
        self.config = config
        self.filename = filename
        self.diags: list[Diagnostic] = []

    def add(self, severity: Severity, line: int, message: str) -> None:
        self.diags.append(Diagnostic(self.filename, line, severity, message))

    def error(self, line: int, message: str) -> None:
        self.add(Severity.ERROR, line, message)

    def warning(self, line: int, message: str) -> None:
        self.add(Severity.WARNING, line, message)

    def run(self) -> list[Diagnostic]:
        self.strings()
        self.global_section()
        self.virtual_blocks()
        self.failover_blocks()
        return self.diags

    # -- every block ----------------------------------------------------------------
    def strings(self) -> None:
        """Strings a programmatic Config holds must survive dump -> parse."""
        blocks: list[tuple[Any, Scope]] = [(self.config, Scope.GLOBAL)]
        for v in self.config.virtuals:
            blocks.append((v, Scope.VIRTUAL))
            blocks.extend((s, Scope.SERVER) for s in v.servers)
        blocks.extend((f, Scope.FAILOVER) for f in self.config.failovers)
        for obj, scope in blocks:
            texts: list[tuple[str, str]] = []
            if scope is not Scope.GLOBAL:
                texts.append(("name", obj.name))
            for kw in KEYWORDS_BY_SCOPE[scope].values():
                value = getattr(obj, kw.field, None) if kw.kind is not Kind.BLOCK else None
                if isinstance(value, str):
                    texts.append((kw.name, value))
                elif isinstance(value, tuple) and kw.kind is Kind.LIST:
                    texts.extend((kw.name, item) for item in value)
                elif value is not None and kw.kind is Kind.HOST_DEV:
                    texts.append((kw.name, value.device))
            for kw in KEYWORDS_BY_SCOPE[scope].values():
                value = getattr(obj, kw.field, None)
                if kw.kind is Kind.ENUM and value is not None and value not in kw.choices:
                    self.error(_line(obj, kw.field), f"{dg.BAD_ARGUMENT} {value!r} for {kw.name} "
                                                     f"(one of: {' '.join(kw.choices)})")
            for key, text in texts:
                problem = quote_problem(text)
                if problem:
                    self.error(_line(obj, key), f"{key} {text!r} cannot be written in lvs.cf: {problem}")
            if scope is not Scope.GLOBAL and obj.name == "":
                self.error(obj.line, f"{scope.value} block without a name")

    # -- global section ---------------------------------------------------------------
    def global_section(self) -> None:
        c = self.config
        if c.service == "fos":
            self.error(_line(c, "service"),
                       "service = fos: failover services (FOS) are parsed but not run; pylvs "
                       "implements the LVS mode (service = lvs)")
        if c.primary == ANY_ADDRESS:
            self.error(0, "primary is not set: pulse needs the primary router's public address")
        for key in ("primary_private", "backup_private"):
            if getattr(c, key) == ANY_ADDRESS:
                self.error(_line(c, key), f"{dg.BAD_HOSTNAME}: {key} cannot be 0.0.0.0")
        if c.backup_active and c.backup == ANY_ADDRESS:
            self.add(Severity.ADJUSTED, _line(c, "backup_active"),
                     "backup_active = 1 but backup is not set: pylvs runs with backup_active = 0 "
                     "(no heartbeats, no failover), as pulse does")
        if c.backup_active and c.backup != ANY_ADDRESS:
            if c.backup == c.primary:
                self.error(_line(c, "backup"), f"backup {c.backup} is the same address as primary: "
                                               "each router must have its own")
            if c.primary_private is not None and c.backup_private is None:
                self.warning(_line(c, "primary_private"),
                             "primary_private is set but backup_private is not: the second "
                             f"heartbeat path goes to backup's public address {c.backup}")
            if c.backup_private is not None and c.primary_private is None:
                self.warning(_line(c, "backup_private"),
                             "backup_private is set but primary_private is not: the second "
                             f"heartbeat path goes to primary's public address {c.primary}")
            if "heartbeat" in c.lines and not c.heartbeat:
                self.warning(_line(c, "heartbeat"),
                             "heartbeat = 0 does not turn heartbeats off (pulse never reads it); "
                             "heartbeats run whenever backup_active = 1")
        if not 1 <= c.heartbeat_port <= PORT_MAX:
            self.error(_line(c, "heartbeat_port"),
                       f"heartbeat_port {c.heartbeat_port} is not a UDP port (1-{PORT_MAX})")
        if c.keepalive < MIN_HEARTBEAT_INTERVAL:
            self.error(_line(c, "keepalive"), f"keepalive = {c.keepalive}: the heartbeat interval must be "
                                              f"at least {MIN_HEARTBEAT_INTERVAL} s")
        if c.deadtime < MIN_HEARTBEAT_INTERVAL:
            self.error(_line(c, "deadtime"), f"deadtime = {c.deadtime}: must be at least {MIN_HEARTBEAT_INTERVAL} s")
        elif c.keepalive >= MIN_HEARTBEAT_INTERVAL and c.keepalive >= c.deadtime:
            self.warning(_line(c, "deadtime"),
                         f"deadtime ({c.deadtime} s) is not longer than keepalive ({c.keepalive} s): "
                         "the peer is declared dead between two heartbeats and the routers will "
                         "flap; make deadtime a few keepalive intervals")
        if c.garp_count < 1:
            self.error(_line(c, "garp_count"), f"garp_count = {c.garp_count}: send at least one gratuitous ARP")
        for key in ("garp_interval", "garp_refresh"):
            if getattr(c, key) < 0:
                self.error(_line(c, key), f"{key} = {getattr(c, key)}: must not be negative")
        if c.config_sync:
            if not c.config_sync_secret:
                self.error(_line(c, "config_sync"), "config_sync = 1 needs config_sync_secret "
                                                    "(a file holding the shared secret, on both routers)")
            if c.config_sync_interval <= 0:
                self.error(_line(c, "config_sync_interval"),
                           f"config_sync_interval = {c.config_sync_interval}: must be positive")
            if not c.backup_active:
                self.warning(_line(c, "config_sync"), "config_sync = 1 without backup_active = 1: "
                                                      "there is no backup to send lvs.cf to")
        if not 1 <= c.syncd_port <= PORT_MAX:
            self.error(_line(c, "syncd_port"), f"syncd_port {c.syncd_port} is not a UDP port (1-{PORT_MAX})")
        if c.syncd_unicast and c.syncdaemon and not c.backup_active:
            self.warning(_line(c, "syncd_unicast"), "syncd_unicast = 1 sends to the peer, but "
                                                    "backup_active = 0: there is no peer")
        if c.nat_router is not None and c.network != "nat":
            self.warning(_line(c, "nat_router"),
                         f"nat_router is only used with network = nat (network is {c.network})")
        if c.network == "nat" and c.nat_router is None and c.service == "lvs" and c.active_virtuals():
            self.warning(_line(c, "network"),
                         "network = nat without nat_router: the real servers need a route back "
                         "through this director (nat_router is the floating gateway address "
                         "that follows the active router)")
        for mask_key in ("nat_nmask",):
            mask = getattr(c, mask_key)
            if not is_contiguous_mask(mask):
                self.error(_line(c, mask_key), f"{dg.BAD_NETMASK}: {mask_key} {mask} is not a contiguous netmask")
        if not 0 <= c.syncd_id <= SYNCD_ID_MAX:
            self.add(Severity.ADJUSTED, _line(c, "syncd_id"),
                     f"syncd_id = {c.syncd_id} is outside 0-{SYNCD_ID_MAX}: pylvs uses "
                     f"{c.syncd_id & SYNCD_ID_MAX} (masked to 8 bits, as pulse does)")
        for key in ("tcp_timeout", "tcpfin_timeout", "udp_timeout"):
            if getattr(c, key) < 0:
                self.error(_line(c, key),
                           f"{key} = {getattr(c, key)}: a timeout cannot be negative (0 keeps the current value)")
        if c.service == "lvs":
            if not c.active_virtuals():
                self.error(0, "no active lvs services defined (pulse's words): at least one "
                              "virtual block needs active = 1")
            for f in c.failovers:
                self.warning(f.line, f'failover "{f.name}" is ignored with service = lvs')

    # -- virtual blocks -------------------------------------------------------------------
    def virtual_blocks(self) -> None:
        c = self.config
        seen_names: dict[str, VirtualServer] = {}
        seen_keys: dict[tuple[Any, ...], VirtualServer] = {}
        vip_device: dict[IPv4Address, VirtualServer] = {}
        device_vip: dict[str, VirtualServer] = {}
        vips = {v.vip for v in c.virtuals if v.active and v.vip is not None}
        for v in c.virtuals:
            if v.name in seen_names:
                self.error(v.line, f'virtual "{v.name}" is defined twice (first at line {seen_names[v.name].line})')
            seen_names.setdefault(v.name, v)
            self.virtual(v, vips)
            if v.address is None:
                continue
            key: tuple[Any, ...] = ("fwmark", v.fwmark) if v.fwmark else (v.protocol, v.vip, v.port)
            first = seen_keys.get(key)
            if first is not None:
                what = (f"firewall mark {v.fwmark}" if v.fwmark
                        else f"{v.protocol} {v.vip}:{v.port}")
                both = v.active and first.active
                self.add(Severity.ERROR if both else Severity.WARNING, v.line,
                         f'virtual "{v.name}" is the same service ({what}) as virtual '
                         f'"{first.name}" at line {first.line}'
                         + ("" if both else " (harmless while one of them is inactive)"))
            else:
                seen_keys[key] = v
            if not v.active or v.manual:  # added by hand: pylvs brings up no address for it
                continue
            other = vip_device.get(v.address.ip)
            if other is not None and other.address is not None and other.address.device != v.address.device:
                self.warning(_line(v, "address"),
                             f"VIP {v.address.ip} is put on {v.address.device} here but on "
                             f'{other.address.device} by virtual "{other.name}" (line {other.line}); '
                             "a VIP should live on one interface alias")
            vip_device.setdefault(v.address.ip, v)
            holder = device_vip.get(v.address.device)
            if holder is not None and holder.address is not None and holder.address.ip != v.address.ip:
                self.warning(_line(v, "address"),
                             f"interface alias {v.address.device} already carries {holder.address.ip} "
                             f'(virtual "{holder.name}", line {holder.line}); with ifconfig, as piranha '
                             "used it, one alias holds one address: use another alias")
            device_vip.setdefault(v.address.device, v)

    def virtual(self, v: VirtualServer, vips: set[IPv4Address | None]) -> None:
        where = f'virtual "{v.name}"'
        if v.active:
            if v.address is None:
                self.error(v.line, f"{where} is active but has no address = IP DEV line")
            elif v.address.ip == ANY_ADDRESS:
                self.error(_line(v, "address"), f"{where}: 0.0.0.0 is not a virtual IP")
        if not is_contiguous_mask(v.vip_nmask):
            self.error(_line(v, "vip_nmask"), f"{dg.BAD_NETMASK}: vip_nmask {v.vip_nmask} is not a contiguous netmask")
        if not PORT_MIN <= v.port <= PORT_MAX:
            self.error(_line(v, "port"), f"{where}: port {v.port} is out of range ({PORT_MIN}-{PORT_MAX})")
        elif v.port == 0 and not v.fwmark and not v.persistent:
            self.error(_line(v, "port"), f"{where}: Zero port specified for non-persistent service "
                                         "(ipvsadm's words; port 0 means every port and needs persistent)")
        if not 0 <= v.fwmark <= FWMARK_MAX:
            self.error(_line(v, "fwmark"), f"{where}: fwmark {v.fwmark} is out of range (1-{FWMARK_MAX}, 0 = none)")
        elif v.fwmark and not v.persistent:
            self.warning(_line(v, "fwmark"),
                         f"{where}: firewall-mark service without persistent: the ports the mark "
                         "groups may each go to a different real server (the RHEL guide uses "
                         "persistence with firewall marks); port stays the health-check port")
        if v.persistent < 0 or v.persistent > PERSISTENT_MAX:
            self.error(_line(v, "persistent"),
                       f"{where}: persistent = {v.persistent}: must be 0 (off) or 1-{PERSISTENT_MAX} seconds")
        if not is_contiguous_mask(v.pmask):
            self.error(_line(v, "pmask"), f"{dg.BAD_NETMASK}: pmask {v.pmask} is not a contiguous netmask")
        elif v.pmask != ANY_ADDRESS and not v.persistent:
            self.warning(_line(v, "pmask"), f"{where}: pmask has no effect without persistent")
        if v.timeout < 1:
            self.error(_line(v, "timeout"), f"{where}: timeout = {v.timeout}: the health-check "
                                            "interval and timeout must be at least 1 second")
        if v.reentry < 0:
            self.error(_line(v, "reentry"), f"{where}: reentry = {v.reentry} cannot be negative")
        if v.sorry_server is not None and v.sorry_server in vips:
            self.error(_line(v, "sorry_server"), f"{where}: sorry_server {v.sorry_server} is a virtual IP "
                                                 "of this director: traffic would loop")
        if v.send is not None and v.send_program is not None:
            self.warning(_line(v, "send"), f"{where}: send is ignored because send_program is set")
        if v.use_regex and v.expect is None:
            self.warning(_line(v, "use_regex"), f"{where}: use_regex = 1 has no effect without expect")
        elif v.use_regex and v.expect != "*":
            problem = _regex_problem(v.expect)
            if problem:
                self.error(_line(v, "expect"), f"{where}: {problem}: the health check could never pass")
        if v.send_program is not None and v.expect is None:
            self.warning(_line(v, "send_program"),
                         f"{where}: send_program without expect: nanny compares the program's output "
                         "with expect, so the check can never pass; add expect")
        if (v.protocol == "udp" and v.send is None and v.send_program is None):
            self.warning(_line(v, "protocol"),
                         f"{where}: udp service without send or send_program: the health check "
                         "sends nothing and waits for a reply, so a UDP server that only answers "
                         "requests is never marked up; give a send string or a send_program")
        for key in ("start_cmd", "stop_cmd"):
            if getattr(v, key) is not None:
                self.warning(_line(v, key), f"{where}: {key} only has an effect in failover blocks")
        self.real_servers(v, vips)

    def real_servers(self, v: VirtualServer, vips: set[IPv4Address | None]) -> None:
        c = self.config
        where = f'virtual "{v.name}"'
        names: dict[str, RealServer] = {}
        targets: dict[tuple[IPv4Address, int], RealServer] = {}
        if not 0 <= v.sched_flags <= SCHED_FLAGS_MAX:
            self.error(v.line, f"{where}: scheduler flags {v.sched_flags:#x} are out of range "
                               f"(0-{SCHED_FLAGS_MAX:#x}: sh/mh-fallback 1, sh/mh-port 2, flag-3 4)")
        for s in v.servers:
            at = f'{where}, server "{s.name}"'
            if s.name in names:
                self.error(s.line, f'{at} is defined twice in this virtual (first at line {names[s.name].line})')
            names.setdefault(s.name, s)
            if not WEIGHT_MIN <= s.weight <= WEIGHT_MAX:
                self.error(_line(s, "weight"), f"{at}: illegal weight specified ({s.weight}; "
                                               f"{WEIGHT_MIN}-{WEIGHT_MAX}, as ipvsadm 1.31)")
            if s.forward is not None and s.forward not in NETWORKS:
                self.error(s.line, f"{at}: unknown forwarding method {s.forward!r} "
                                   f"(one of {', '.join(NETWORKS)})")
            for what, value in (("u_threshold", s.u_threshold), ("l_threshold", s.l_threshold)):
                if not 0 <= value <= THRESHOLD_MAX:
                    self.error(s.line, f"{at}: illegal {what} specified ({value}; 0-{THRESHOLD_MAX}, as ipvsadm)")
            if s.l_threshold > s.u_threshold >= 0:
                self.error(s.line, f"{at}: lower threshold {s.l_threshold} is higher than upper threshold "
                                   f"{s.u_threshold} (the kernel refuses it: ERANGE)")
            method = server_forward(c, s)
            forced = method in PORT_FORCING_METHODS  # ipvsadm -g/-i force dport = vport
            if s.port is not None and not PORT_MIN <= s.port <= PORT_MAX:
                self.error(_line(s, "port"), f"{at}: port {s.port} is out of range ({PORT_MIN}-{PORT_MAX})")
            elif s.port is not None and forced and s.port != v.port and not v.fwmark:
                how = f"network = {c.network}" if s.forward is None else f"forwarding method {method}"
                self.warning(_line(s, "port"),
                             f"{at}: port {s.port} is ignored with {how}: the packet "
                             f"keeps the virtual port {v.port} (only the health check uses {s.port})")
            if not s.active:
                continue
            if s.address is None:
                self.error(s.line, f"{at} is active but has no address")
                continue
            if s.address == ANY_ADDRESS:
                self.error(_line(s, "address"), f"{at}: 0.0.0.0 is not a real server address")
                continue
            if s.address in vips:
                self.error(_line(s, "address"), f"{at}: address {s.address} is a virtual IP of this "
                                                "director: traffic would loop")
            port = v.port if forced else v.server_port(s)
            first = targets.get((s.address, port))
            if first is not None:
                self.error(s.line, f"{at}: same destination {s.address}:{port} as server "
                                   f'"{first.name}" (line {first.line}) (ipvsadm: Destination already exists)')
            else:
                targets[(s.address, port)] = s
        if v.active and not any(s.active for s in v.servers):
            fallback = (f"; only the sorry_server {v.sorry_server} will answer" if v.sorry_server
                        else ": every connection to it is refused")
            self.warning(v.line, f"{where} is active but has no active real server{fallback}")

    # -- failover blocks ------------------------------------------------------------------
    def failover_blocks(self) -> None:
        seen: dict[str, FailoverService] = {}
        for f in self.config.failovers:
            if f.name in seen:
                self.error(f.line, f'failover "{f.name}" is defined twice (first at line {seen[f.name].line})')
            seen.setdefault(f.name, f)


def check(config: Config, filename: str = "lvs.cf") -> list[Diagnostic]:
    """Semantic diagnostics for a Config, sorted by line."""
    return sorted(_Checker(config, filename).run(), key=dg.sort_key)


@dataclass(frozen=True)
class CheckResult:
    config: Config
    diagnostics: tuple[Diagnostic, ...]

    @property
    def exit_code(self) -> int:
        return dg.exit_code(self.diagnostics)

    @property
    def ok(self) -> bool:
        return not dg.has_errors(self.diagnostics)


def _combine(parsed: ParseResult, filename: str) -> CheckResult:
    diags = list(parsed.diagnostics)
    # Semantic checks on a file that did not even parse, or is empty, would only repeat
    # the parse errors in other words.
    fatal = {dg.EMPTY_CONFIGURATION, dg.IO_ERROR}
    if not any(d.line == 0 and d.message.startswith(tuple(fatal)) for d in diags):
        diags.extend(check(parsed.config, filename))
    diags.sort(key=dg.sort_key)
    return CheckResult(parsed.config, tuple(diags))


def check_text(text: str, filename: str = "lvs.cf", resolver: Resolver | None = None) -> CheckResult:
    """Parse and check lvs.cf text."""
    return _combine(parse(text, filename, resolver), filename)


def check_file(path: str, resolver: Resolver | None = None) -> CheckResult:
    """Read, parse and check an lvs.cf file."""
    return _combine(parse_file(path, resolver), path)


def _regex_problem(expect: str) -> str | None:
    """Why an expect string is not a valid POSIX extended regex (as the health probe
    compiles it, escapes applied), or None."""
    from pylvs.health.probes import apply_escapes, compile_expect  # the probe is the judge

    try:
        compile_expect(apply_escapes(expect).encode("utf-8", "surrogateescape"))
    except ValueError as exc:
        return str(exc)
    return None


def adjusted(config: Config) -> Config:
    """The Config pylvs runs: the ADJUSTED-grade changes applied (as pulse makes them)."""
    changes: dict[str, Any] = {}
    if config.backup_active and config.backup == ANY_ADDRESS:
        changes["backup_active"] = False
    if not 0 <= config.syncd_id <= SYNCD_ID_MAX:
        changes["syncd_id"] = config.syncd_id & SYNCD_ID_MAX
    return replace(config, **changes) if changes else config


def load_for_daemon(path: str, log: Any) -> Config:
    """What a daemon (lvs, pulse) runs: the checked, adjusted Config of an LVS-mode file,
    every diagnostic logged where it is (errors as errors).  ConfigError on errors,
    ValueError when the file is a FOS one (parsed, never run by pylvs)."""
    result = check_file(path)
    for d in result.diagnostics:
        (log.error if d.severity is Severity.ERROR else log.warning)("%s", d)
    if not result.ok:
        raise ConfigError(result.diagnostics)
    config = adjusted(result.config)
    if config.service != "lvs":
        raise ValueError(f"{path}: service = {config.service}: pylvs runs the LVS mode only "
                         "(the FOS failover services are parsed, not run)")  # fmt: skip
    return config


def load(path: str, resolver: Resolver | None = None, *, adjust: bool = True) -> Config:
    """The checked Config of a file; raises ConfigError (with every diagnostic) on error.

    Warnings and adjustments do not raise (read them from check_file() to log them).
    With `adjust` (the default) the Config returned is the one to run: see adjusted().
    """
    result = check_file(path, resolver)
    if not result.ok:
        raise ConfigError(result.diagnostics)
    return adjusted(result.config) if adjust else result.config
