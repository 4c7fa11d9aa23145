"""The RHEL 5 guide's LVS topologies (NAT, direct routing, tunnelling) in network
namespaces: clients, one or two directors, a router ``gw`` and N real servers on two
bridged segments.  See docs/lab.md for the diagrams.

    with lab_topology("direct", real_servers=3) as lab:
        reply = lab.http_get("dir1", lab.rips[0])

Every namespace is ``<lab name>-<host>``; the lab name is a short random prefix unless
given.  Everything the lab creates is removed by ``Lab.destroy()``, which runs when the
``with`` block ends (also on exception), at interpreter exit and on SIGTERM/SIGINT/SIGHUP
(pylvs.lab.cleanup).  The root namespace is never part of a topology: veth pairs are
created between lab namespaces and the segments are bridges inside "switch" namespaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pickle
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pylvs.lab import cleanup, netns, probes, servers, state, tunnel

# --- the kinds (lvs.cf `network = nat | direct | tunnel`) -------------------------------

NAT, DIRECT, TUNNEL = "nat", "direct", "tunnel"
KINDS = (NAT, DIRECT, TUNNEL)

# --- roles -------------------------------------------------------------------------------

CLIENT, DIRECTOR, ROUTER, REAL_SERVER, SWITCH = "client", "director", "router", "real_server", "switch"

# --- segments and addresses (10.77.0.0/16, as the reference lab in /work/shared/lab) ----

PUBLIC, PRIVATE = "public", "private"
PREFIXLEN = 24
SEGMENT_NETS = {PUBLIC: "10.77.1.0/24", PRIVATE: "10.77.2.0/24"}
VIP = "10.77.1.100"  # lvs.cf `address = 10.77.1.100 eth0:1`; public side, clients' target
NAT_ROUTER = "10.77.2.254"  # lvs.cf `nat_router = 10.77.2.254 eth1:1`; NAT RSs' gateway
GW_PUBLIC = "10.77.1.254"  # router joining the segments: DR/TUN replies leave through it
GW_PRIVATE = "10.77.2.253"
DIRECTOR_PUBLIC = ("10.77.1.1", "10.77.1.2")  # lvs.cf primary / backup
DIRECTOR_PRIVATE = ("10.77.2.1", "10.77.2.2")  # lvs.cf primary_private / backup_private
CLIENT_FIRST = 51  # clients 10.77.1.51.. (below the VIP, away from the directors)
RS_FIRST = 11  # real servers 10.77.2.11..
MAX_CLIENTS = 40
MAX_REAL_SERVERS = 200
MAX_DIRECTORS = 2
MAX_DIRECTOR_QUEUES = 16  # receive queues per director interface (AF_XDP workers)

# Interface names follow the guide: a director's eth0 is public, eth1 private.
PUBLIC_IF, PRIVATE_IF = "eth0", "eth1"
HOST_IF = "eth0"  # clients' and real servers' only interface
BRIDGE = "br0"  # the bridge inside each switch namespace

HTTP_PORT = servers.HTTP_PORT
UDP_ECHO_PORT = servers.UDP_ECHO_PORT
READY_TIMEOUT = 15.0  # seconds for helper processes to report ready (Python start-up)
CALL_TIMEOUT = 30.0

# --- sysctls -----------------------------------------------------------------------------

SYSCTL_ALL_NAMESPACES = {
    # No IPv6 in the lab: no DAD/router-solicitation noise on captures, no delay.
    "net.ipv6.conf.all.disable_ipv6": 1,
    "net.ipv6.conf.default.disable_ipv6": 1,
    # New namespaces inherit IPv4 conf from the root one: state every value we rely on.
    # Lab paths are asymmetric (DR/TUN replies leave via gw with the VIP as source), so
    # strict reverse-path filtering would drop them; the director sets what it needs.
    "net.ipv4.conf.all.rp_filter": 0,
    "net.ipv4.conf.default.rp_filter": 0,
    "net.ipv4.ip_forward": 0,
}
SYSCTL_FORWARDER = {
    "net.ipv4.ip_forward": 1,  # directors and gw route between the segments
    "net.ipv4.conf.all.send_redirects": 0,  # never steer hosts around the director
    "net.ipv4.conf.default.send_redirects": 0,
}
# Only present with br_netfilter loaded: keep bridged frames out of iptables.
SYSCTL_SWITCH_OPTIONAL = {
    "net.bridge.bridge-nf-call-iptables": 0,
    "net.bridge.bridge-nf-call-ip6tables": 0,
    "net.bridge.bridge-nf-call-arptables": 0,
}
ARP_IGNORE = 1  # reply only for addresses on the receiving interface: the VIP on lo/tunl0 stays silent
ARP_ANNOUNCE = 2  # ARP requests use the best local address of the outgoing interface, never the VIP


def _mac(ip: str) -> str:
    """Deterministic, locally administered MAC from an address: 10.77.S.H -> 02:77:00:00:S:H."""
    a = ipaddress.IPv4Address(ip).packed
    return f"02:77:00:00:{a[2]:02x}:{a[3]:02x}"


# --- the data ------------------------------------------------------------------------------

@dataclass
class Interface:
    name: str
    segment: str | None  # PUBLIC / PRIVATE, None for lo / tunnel devices
    address: str | None  # primary IPv4 address
    prefixlen: int = PREFIXLEN
    mac: str | None = None
    extra: list[str] = field(default_factory=list)  # further "ip/len" (VIP, NAT router)


@dataclass
class Host:
    name: str  # client1, dir1, dir2, gw, rs1..
    role: str
    netns: str
    interfaces: dict[str, Interface] = field(default_factory=dict)
    default_route: str | None = None

    def iface(self, segment: str) -> Interface:
        for itf in self.interfaces.values():
            if itf.segment == segment:
                return itf
        raise KeyError(f"{self.name} has no interface on the {segment} segment")

    def ip(self, segment: str | None = None) -> str:
        """The host's address on `segment` (default: its first segment)."""
        if segment is None:
            segment = next(i.segment for i in self.interfaces.values() if i.segment)
        addr = self.iface(segment).address
        assert addr is not None
        return addr

    @property
    def mac(self) -> str:
        return next(i.mac for i in self.interfaces.values() if i.mac)

    def enter(self) -> str:
        return f"ip netns exec {self.netns} bash"


@dataclass
class LabProcess:
    host: str
    what: str
    pid: int
    start_time: int | None
    popen: subprocess.Popen | None = None


class Lab:
    """A running topology: hosts, addresses and helpers to act inside its namespaces.

    Attributes: name, kind, vip, nat_router, http_port, udp_port, hosts (name -> Host),
    switches (segment -> namespace), tunnel_mode/tunnel_reason (TUN labs), processes."""

    def __init__(self, name: str, kind: str, *, persistent: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.persistent = persistent
        self.vip = VIP
        self.nat_router = NAT_ROUTER
        self.http_port = HTTP_PORT
        self.udp_port = UDP_ECHO_PORT
        self.vip_on_director = False
        self.client_vip_route = False
        self.director_queues = 1
        self.hosts: dict[str, Host] = {}
        self.switches: dict[str, str] = {}
        self.tunnel_mode: str | None = None
        self.tunnel_reason: str | None = None
        self.processes: list[LabProcess] = []
        self.destroyed = False
        self._record = state.LabRecord(name=name, kind=kind, persistent=persistent,
                                       owner_pid=os.getpid(),
                                       owner_start=netns.proc_start_time(os.getpid()))

    @property
    def owner_pid(self) -> int:
        return self._record.owner_pid

    # -- views --
    def _role(self, role: str) -> list[Host]:
        return [h for h in self.hosts.values() if h.role == role]

    @property
    def clients(self) -> list[Host]:
        return self._role(CLIENT)

    @property
    def directors(self) -> list[Host]:
        return self._role(DIRECTOR)

    @property
    def director(self) -> Host:
        """dir1, the primary director."""
        return self.directors[0]

    @property
    def real_servers(self) -> list[Host]:
        return self._role(REAL_SERVER)

    @property
    def gateway(self) -> Host:
        return self.hosts["gw"]

    @property
    def rips(self) -> list[str]:
        return [rs.ip(PRIVATE) for rs in self.real_servers]

    @property
    def netns_names(self) -> list[str]:
        return [h.netns for h in self.hosts.values()] + list(self.switches.values())

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def host(self, host: Host | str) -> Host:
        return host if isinstance(host, Host) else self.hosts[host]

    # -- acting inside a namespace --
    def run(self, host: Host | str, argv: Sequence[str], *, timeout: float = 10.0,
            check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the host's namespace and wait (at most `timeout` s)."""
        proc = subprocess.run(netns.exec_argv(self.host(host).netns, argv), input=input,
                              capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout,
                                                proc.stderr)
        return proc

    def popen(self, host: Host | str, argv: Sequence[str], *, what: str = "process",
              **kwargs: Any) -> subprocess.Popen:
        """Start `argv` in the host's namespace; the lab ends it (by PID) on destroy.
        Runs in its own session (a terminal's ^C does not reach it) and dies with this
        process unless the lab is persistent.  Call from the thread that owns the lab:
        PR_SET_PDEATHSIG follows the forking thread."""
        h = self.host(host)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if not self.persistent:
            kwargs["preexec_fn"] = netns.die_with_parent
        popen = subprocess.Popen(netns.exec_argv(h.netns, argv), start_new_session=True,
                                 **kwargs)
        proc = LabProcess(h.name, what, popen.pid, netns.proc_start_time(popen.pid), popen)
        self.processes.append(proc)
        self._record.processes.append(
            state.ProcessRecord(proc.pid, proc.start_time, proc.host, proc.what))
        state.write(self._record)
        return popen

    def python(self, host: Host | str, *args: str, timeout: float = CALL_TIMEOUT,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """``python ARGS`` (e.g. "-c", code or "-m", module) in the host's namespace."""
        return self.run(host, [sys.executable, *args], timeout=timeout, check=check)

    def call(self, host: Host | str, func: Callable[..., Any], *args: Any,
             timeout: float = CALL_TIMEOUT, **kwargs: Any) -> Any:
        """Call module-level `func(*args, **kwargs)` in a Python process in the host's
        namespace and return its result (exceptions are re-raised here)."""
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.run(
            netns.exec_argv(self.host(host).netns, [sys.executable, "-m", "pylvs.lab.runner"]),
            input=pickle.dumps((func, args, kwargs)), capture_output=True, timeout=timeout,
            env=env, check=False)
        if not proc.stdout:
            raise RuntimeError(f"call {func.__name__} in {self.host(host).netns} failed "
                               f"(exit {proc.returncode}): {proc.stderr.decode()[-2000:]}")
        status, value = pickle.loads(proc.stdout)
        if status == "error":
            raise value
        return value

    def socket(self, host: Host | str, family: int = socket.AF_INET,
               type: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
        """A socket in the host's namespace, used from this process."""
        return netns.socket_in(self.host(host).netns, family, type, proto)

    def http_get(self, host: Host | str, ip: str, port: int | None = None,
                 timeout: float = 3.0) -> probes.HttpReply:
        """GET http://ip:port/ from `host`."""
        return probes.http_get(self.socket(host), ip, port or self.http_port, timeout=timeout)

    def udp_echo(self, host: Host | str, ip: str, payload: bytes = b"ping",
                 port: int | None = None, timeout: float = 2.0) -> bytes:
        """Send `payload` to the UDP echo at ip:port from `host`; returns the reply."""
        sock = self.socket(host, socket.AF_INET, socket.SOCK_DGRAM)
        return probes.udp_echo(sock, ip, port or self.udp_port, payload, timeout=timeout)

    # -- description --
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "vip": self.vip,
            "nat_router": self.nat_router, "http_port": self.http_port,
            "udp_port": self.udp_port, "vip_on_director": self.vip_on_director,
            "client_vip_route": self.client_vip_route, "tunnel_mode": self.tunnel_mode,
            "tunnel_reason": self.tunnel_reason, "switches": dict(self.switches),
            "hosts": {
                h.name: {
                    "role": h.role, "netns": h.netns, "default_route": h.default_route,
                    "interfaces": {
                        i.name: {"segment": i.segment, "address": i.address,
                                 "prefixlen": i.prefixlen, "mac": i.mac, "extra": i.extra}
                        for i in h.interfaces.values()},
                } for h in self.hosts.values()},
            "processes": [{"host": p.host, "what": p.what, "pid": p.pid} for p in self.processes],
        }

    def describe(self) -> str:
        return describe(self.to_dict())

    # -- teardown --
    def destroy(self) -> None:
        """End our processes (by PID), delete our namespaces and the record.  Idempotent;
        never raises for things already gone."""
        if self.destroyed:
            return
        self.destroyed = True
        cleanup.unregister(self)
        for proc in reversed(self.processes):
            netns.end_process(proc.pid, proc.start_time, popen=proc.popen)
        errors = []
        for ns in list(self._record.netns):
            try:
                netns.del_netns(ns)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # go on
                errors.append(str(exc))
        state.remove(self.name)
        if errors:
            raise netns.NetnsError("; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def describe(d: dict[str, Any]) -> str:
    """Human summary of Lab.to_dict() (printed by `pylvs lab up`)."""
    lines = [f"lab {d['name']}: {d['kind']}  VIP {d['vip']}"
             + (f"  NAT router {d['nat_router']}" if d["kind"] == NAT else "")
             + (f"  tunnel: {d['tunnel_mode']} ({d['tunnel_reason']})" if d.get("tunnel_mode") else "")]
    lines.append(f"{'host':8} {'role':12} {'interfaces':58} default via")
    for name, h in d["hosts"].items():
        itfs = "  ".join(
            f"{iname} {i['address'] or ''}{'/' + str(i['prefixlen']) if i['address'] else ''}"
            + (f" +{','.join(i['extra'])}" if i["extra"] else "")
            + (f" [{i['mac']}]" if i["mac"] else "")
            for iname, i in h["interfaces"].items())
        lines.append(f"{name:8} {h['role']:12} {itfs:58} {h['default_route'] or '-'}")
    lines.append(f"services on each real server: HTTP :{d['http_port']} "
                 f"(body/X-Real-Server = its name), UDP echo :{d['udp_port']}")
    lines.append("enter a host:   ip netns exec <netns> bash     namespaces:")
    for name, h in d["hosts"].items():
        lines.append(f"  {name:8} {h['netns']}")
    for seg, ns in d["switches"].items():
        lines.append(f"  {'sw-' + seg:8} {ns}  (bridge {BRIDGE})")
    return "\n".join(lines)


# --- building ------------------------------------------------------------------------------

def new_name() -> str:
    return "pl" + secrets.token_hex(3)


def _plan(lab: Lab, real_servers: int, directors: int, clients: int) -> None:
    pub, priv = SEGMENT_NETS[PUBLIC], SEGMENT_NETS[PRIVATE]

    def host(name: str, role: str, links: list[tuple[str, str, str]]) -> Host:
        h = Host(name, role, f"{lab.name}-{name}")
        for ifname, segment, addr in links:
            h.interfaces[ifname] = Interface(ifname, segment, addr, PREFIXLEN, _mac(addr))
        lab.hosts[name] = h
        return h

    net_pub = ipaddress.IPv4Network(pub)
    net_priv = ipaddress.IPv4Network(priv)
    for i in range(clients):
        host(f"client{i + 1}", CLIENT, [(HOST_IF, PUBLIC, str(net_pub[CLIENT_FIRST + i]))])
    for i in range(directors):
        host(f"dir{i + 1}", DIRECTOR, [(PUBLIC_IF, PUBLIC, DIRECTOR_PUBLIC[i]),
                                       (PRIVATE_IF, PRIVATE, DIRECTOR_PRIVATE[i])])
    host("gw", ROUTER, [(PUBLIC_IF, PUBLIC, GW_PUBLIC), (PRIVATE_IF, PRIVATE, GW_PRIVATE)])
    for i in range(real_servers):
        rs = host(f"rs{i + 1}", REAL_SERVER, [(HOST_IF, PRIVATE, str(net_priv[RS_FIRST + i]))])
        # NAT: replies must come back through the director (the lvs.cf nat_router);
        # DR/TUN: replies go straight to the client through gw, bypassing the director.
        rs.default_route = NAT_ROUTER if lab.kind == NAT else GW_PRIVATE
    for seg in (PUBLIC, PRIVATE):
        lab.switches[seg] = f"{lab.name}-sw-{'pub' if seg == PUBLIC else 'lan'}"


def _parallel(func: Callable[[str], None], items: Sequence[str]) -> None:
    """Run func(item) for each item in threads (each only runs subprocesses)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(items)))) as pool:
        for fut in [pool.submit(func, item) for item in items]:
            fut.result()


def _configure_host(lab: Lab, h: Host) -> None:
    """Addresses, routes and per-interface sysctls inside one host namespace."""
    cmds = ["link set lo up"]
    for itf in h.interfaces.values():
        if itf.segment:
            cmds += [f"addr add {itf.address}/{itf.prefixlen} dev {itf.name}",
                     f"link set {itf.name} up"]
    iface_sysctls: dict[str, int] = {}
    if h.role == CLIENT and lab.client_vip_route:
        # Clients reach the VIP through dir1 (until a director answers ARP for it).
        cmds.append(f"route add {lab.vip}/32 via {DIRECTOR_PUBLIC[0]}")
    if h.role == DIRECTOR and h.name == "dir1" and lab.vip_on_director:
        cmds.append(f"addr add {lab.vip}/32 dev {PUBLIC_IF} label {PUBLIC_IF}:1")
        h.iface(PUBLIC).extra.append(f"{lab.vip}/32")
        if lab.kind == NAT:
            cmds.append(f"addr add {lab.nat_router}/32 dev {PRIVATE_IF} label {PRIVATE_IF}:1")
            h.iface(PRIVATE).extra.append(f"{lab.nat_router}/32")
    if h.role == REAL_SERVER:
        if lab.kind == DIRECT:
            # The guide's DR real server: the VIP on a non-ARPing device (here lo).
            cmds.append(f"addr add {lab.vip}/32 dev lo")
            h.interfaces["lo"] = Interface("lo", None, None, 32, None, [f"{lab.vip}/32"])
        elif lab.kind == TUNNEL:
            dev = tunnel.KERNEL_DEV if lab.tunnel_mode == tunnel.MODE_KERNEL else tunnel.USERSPACE_DEV
            if lab.tunnel_mode == tunnel.MODE_KERNEL:
                err = tunnel.ensure_kernel_device(h.netns)
                if err:
                    raise netns.NetnsError(f"{h.netns}: ipip: {err}")
            else:
                cmds.append(f"tuntap add dev {dev} mode tun")
            cmds += [f"addr add {lab.vip}/32 dev {dev}", f"link set {dev} up"]
            h.interfaces[dev] = Interface(dev, None, None, 32, None, [f"{lab.vip}/32"])
            iface_sysctls[f"net.ipv4.conf.{dev}.rp_filter"] = 0
        if lab.kind in (DIRECT, TUNNEL):
            for scope in ("all", HOST_IF):
                iface_sysctls[f"net.ipv4.conf.{scope}.arp_ignore"] = ARP_IGNORE
                iface_sysctls[f"net.ipv4.conf.{scope}.arp_announce"] = ARP_ANNOUNCE
        cmds.append(f"route add default via {h.default_route}")
    netns.ip_batch(h.netns, cmds)
    netns.sysctl(h.netns, iface_sysctls)


def _wait_ready(lab: Lab, popen: subprocess.Popen, label: str, log: str,
                timeout: float = READY_TIMEOUT) -> None:
    """Wait for the helper's ``ready`` line on its stdout."""
    assert popen.stdout is not None
    fd = popen.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError(f"{label}: not ready after {timeout:.0f}s")
            chunk = os.read(fd, 256)
            if not chunk:
                break
            buf += chunk
    finally:
        popen.stdout.close()
    if not buf.startswith(servers.READY.encode()):
        tail = ""
        with contextlib.suppress(OSError):
            tail = Path(log).read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{label} failed to start (exit {popen.poll()}): {tail}")


def _start_helpers(lab: Lab) -> None:
    logs = state.log_dir(lab.name)
    logs.mkdir(parents=True, exist_ok=True)
    pending = []
    for rs in lab.real_servers:
        jobs = [("servers", ["-m", "pylvs.lab.servers", "--name", rs.name,
                             "--http-port", str(lab.http_port), "--udp-port", str(lab.udp_port)])]
        if lab.kind == TUNNEL and lab.tunnel_mode == tunnel.MODE_USERSPACE:
            jobs.append(("decap", ["-m", "pylvs.lab.tunnel", "decap", "--dev",
                                   tunnel.USERSPACE_DEV]))
        for what, args in jobs:
            log = str(logs / f"{rs.name}-{what}.log")
            with open(log, "wb") as err:
                popen = lab.popen(rs, [sys.executable, *args], what=what,
                                  stdout=subprocess.PIPE, stderr=err)
            pending.append((popen, f"{rs.name} {what}", log))
    for popen, label, log in pending:  # all start in parallel; wait for each
        _wait_ready(lab, popen, label, log)


def build_lab(kind: str, real_servers: int = 3, directors: int = 1, *, clients: int = 1,
              name: str | None = None, vip_on_director: bool = False,
              client_vip_route: bool | None = None, tunnel_mode: str = tunnel.MODE_AUTO,
              start_servers: bool = True, persistent: bool = False, director_queues: int = 1) -> Lab:
    """Build a topology and return the running Lab (call destroy(), or use lab_topology).

    kind: nat | direct | tunnel.  vip_on_director: put the VIP (and for nat the NAT
    router address) on dir1, as an active director would.  client_vip_route: clients
    get a /32 route to the VIP via dir1 (default: when there is one director; with two,
    clients ARP for the VIP so a failover's gratuitous ARP moves them).  tunnel_mode:
    auto | kernel | userspace (see pylvs.lab.tunnel).  persistent: the lab outlives this
    process (`pylvs lab up`).  director_queues: receive queues of the directors'
    interfaces (several AF_XDP workers)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if not 1 <= real_servers <= MAX_REAL_SERVERS:
        raise ValueError(f"real_servers must be 1..{MAX_REAL_SERVERS}")
    if not 1 <= directors <= MAX_DIRECTORS:
        raise ValueError(f"directors must be 1..{MAX_DIRECTORS}")
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be 1..{MAX_CLIENTS}")
    if tunnel_mode not in tunnel.MODES:
        raise ValueError(f"tunnel_mode must be one of {', '.join(tunnel.MODES)}")
    name = name or new_name()
    if not state.NAME_RE.match(name):
        raise ValueError(f"lab name {name!r}: 2-12 lower-case letters/digits, letter first")
    if state.read(name) is not None or any(n.startswith(name + "-") for n in netns.list_netns()):
        raise ValueError(f"lab {name!r} already exists (pylvs lab list)")

    lab = Lab(name, kind, persistent=persistent)
    lab.vip_on_director = vip_on_director
    lab.client_vip_route = (directors == 1) if client_vip_route is None else client_vip_route
    if not 1 <= director_queues <= MAX_DIRECTOR_QUEUES:
        raise ValueError(f"director_queues must be 1..{MAX_DIRECTOR_QUEUES}")
    lab.director_queues = director_queues
    _plan(lab, real_servers, directors, clients)
    # Record first (a SIGKILL mid-build leaves something `down` can remove), then create.
    lab._record.netns = lab.netns_names
    state.write(lab._record)
    cleanup.register(lab)
    try:
        _create(lab, tunnel_mode)
        if start_servers:
            _start_helpers(lab)
        lab._record.summary = lab.to_dict()
        state.write(lab._record)
    except BaseException:
        with contextlib.suppress(Exception):
            lab.destroy()
        raise
    if persistent:
        cleanup.unregister(lab)  # meant to outlive us; `pylvs lab down` removes it
    return lab


def _create(lab: Lab, tunnel_mode: str) -> None:
    forwarders = {h.netns for h in lab.hosts.values() if h.role in (DIRECTOR, ROUTER)}

    def make_ns(ns: str) -> None:
        netns.add_netns(ns)
        settings = dict(SYSCTL_ALL_NAMESPACES)
        if ns in forwarders:
            settings.update(SYSCTL_FORWARDER)
        netns.sysctl(ns, settings)
        if ns in lab.switches.values():
            netns.sysctl(ns, SYSCTL_SWITCH_OPTIONAL, optional=True)
            # STP off (the default) means ports forward at once; no learning delay.
            netns.ip_batch(ns, ["link set lo up",
                                f"link add {BRIDGE} type bridge stp_state 0",
                                f"link set {BRIDGE} up"])

    _parallel(make_ns, lab.netns_names)

    # One veth per host interface: switch port named after the host, host end eth0/eth1.
    def wire(seg: str) -> None:
        sw = lab.switches[seg]
        ports = []
        for h in lab.hosts.values():
            for itf in h.interfaces.values():
                if itf.segment == seg:
                    q = lab.director_queues if h.role == DIRECTOR else 1
                    netns.veth(sw, h.name, h.netns, itf.name, mac_b=itf.mac, queues=q)
                    ports += [f"link set {h.name} master {BRIDGE}", f"link set {h.name} up"]
        netns.ip_batch(sw, ports)

    _parallel(wire, [PUBLIC, PRIVATE])

    if lab.kind == TUNNEL:
        lab.tunnel_mode, lab.tunnel_reason = tunnel.choose_mode(lab.real_servers[0].netns,
                                                                tunnel_mode)
    _parallel(lambda n: _configure_host(lab, lab.hosts[n]), list(lab.hosts))


@contextlib.contextmanager
def lab_topology(kind: str, real_servers: int = 3, directors: int = 1,
                 **kwargs: Any) -> Iterator[Lab]:
    """``with lab_topology("nat", real_servers=3, directors=1) as lab:`` -- a lab that is
    removed when the block ends, whatever ends it.  kwargs: see build_lab."""
    lab = build_lab(kind, real_servers, directors, **kwargs)
    try:
        yield lab
    finally:
        lab.destroy()
