"""The lvs role: one router's virtual services from lvs.cf, forwarded in userspace.

``pylvs lvs -c FILE`` (``pylvs.cli.lvs``) runs a ``Director``:

* start: check the file (errors are logged with their file:line and the director does
  not start), compile it into tables, clean what a crashed director left, let netctl
  install rules and addresses, resolve the real servers' MACs (direct routing and
  tunnelling), then run the I/O adapter in its own thread, the dataplane thread;
* the control thread (the caller of ``run``) handles signals, ticks the rate
  estimators every 2 s and writes the status file;
* ``SIGHUP``: check the file again; a bad file is logged and the running configuration
  keeps forwarding; a good one is compiled outside the dataplane lock and swapped in
  (``Forwarder.swap``): established connections keep their real server;
* the control socket (``pylvs.control``, ``--control``): ``status``, ``reload`` (SIGHUP's,
  answered with its outcome), ``server.state`` (drain, maint, ready: HAProxy's admin
  states), ``force`` and pylvsadm's verbs; with ``--web-group`` a second socket
  (``--web-control``, 0660) offers ``pylvs web`` the first three alone;
* ``pylvsadm`` (``pylvs.ipvsadm``) changes the running table through the control socket,
  compiled and swapped the same way (``install``); its changes live until a restart or a
  reload, as manual ipvsadm changes lived until piranha's lvs restarted.  Without an
  lvs.cf (``path`` None, ``pylvs lvs --bare``) the director starts with an empty table
  that pylvsadm alone configures: a bare IPVS-like data plane;
* ``SIGTERM``/``SIGINT``: stop the adapter, remove rules and addresses, exit 0.
* ``--standby`` (how ``pylvs pulse`` runs it, docs/ha.md): everything above is ready
  (tables compiled, JIT warm, health checks and connection sync running) but nothing is
  captured until ``SIGUSR1``; ``SIGUSR2`` goes back to standby.  The connection table
  stays across both, so synced connections survive a takeover.

Adapters (``--io``): ``nfq-loop`` (the whole loop in C, the engine called as a cfunc:
no Python per packet; the default when it is built), ``nfq-native`` (batched C I/O
around the engine called from Python, kept for comparison), ``nfqueue`` (the
``netfilterqueue`` package, per packet), ``afxdp`` (an XDP program hands the service
traffic to AF_XDP sockets served by the same C loop; NAT, DR and TUN, no firewall marks),
``afpacket`` (frames in and out; direct routing and tunnelling only).  With an NFQUEUE
adapter, direct-routing packets are sent as frames to the real server's MAC and their
queued copy is dropped; NAT and tunnelled packets go back to the kernel in the
verdict, rewritten.  Why the rules sit where they do: docs/netctl.md.  The control
loop also expires connections on a clock (``Forwarder.expire``), so counts stay right
while no packet arrives.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylvs.addr import ip_int, ip_str, mac_bytes
from pylvs.config import diagnostics as dg
from pylvs.config.check import forward_methods, load_for_daemon, server_forward
from pylvs.config.model import Config
from pylvs.control import (
    ADMIN_STATES,
    FORCE_STATES,
    WEB_ACCEPT_PER_POLL,
    WEB_IO_TIMEOUT,
    WEB_MODE,
    WEB_VERBS,
    ControlSocket,
)
from pylvs.dataplane import tables as tb
from pylvs.dataplane.defense import DEFENSE_TIMER_PERIOD, Defense
from pylvs.dataplane.estimator import EST_INTERVAL
from pylvs.dataplane.forwarder import CONN_TABLE_CAPACITY, GC_INTERVAL, Forwarder, dest_addresses
from pylvs.health.monitor import FORCED_DOWN
from pylvs.health.runner import HealthRunner
from pylvs.sched import ADDR
from pylvs.service.daemon import write_atomic
from pylvs.service.lock import InstanceLock
from pylvs.service.notify import Notifier
from pylvs.service.wake import Waker

log = logging.getLogger("pylvs.lvs")

IO_CHOICES = ("auto", "nfq-loop", "afxdp", "nfq-native", "nfqueue", "afpacket")
WORKER_IOS = ("auto", "nfq-loop", "afxdp")  # --workers N: N C loops (queues, AF_XDP receive queues)
XDP_MODES = ("auto", "native", "skb")
BUSY_POLL_MAX_US = 100_000  # --busy-poll: a spin longer than 0.1 s is a core given away
STATUS_INTERVAL = 1.0  # seconds between status-file writes
CONTROL_WAKEUP = 0.25  # control loop granularity (signals are noticed within this)
ADAPTER_JOIN_TIMEOUT = 5.0  # the adapters poll `stop` every 0.2 s
NEIGHBOUR_REFRESH = 30.0  # seconds between re-resolutions of real-server MACs
NEIGHBOUR_RETRY = 2.0  # at most this often for a MAC a packet found missing
# Expiry on a clock: the control loop sweeps this many connection-table slots at each
# wake-up (every CONTROL_WAKEUP s at most), under the gate: ~0.1 ms of sequential reads,
# so the dataplane never waits long for it.  A 65,536-entry table is walked whole in
# about a second, the default 2^20 in about 16 s: an idle entry ends at most that late,
# and ActiveConn/InActConn follow.
EXPIRE_SLICE = 16384
UNREACHABLE_ADDR = ("192.0.2.0", 9)  # TEST-NET-1: only used for a route lookup, nothing is sent


class DirectorError(Exception):
    """The director cannot start (the message says what and where)."""


def source_address_towards(addr: str) -> int:
    """The address this host would send from to ``addr`` (a route lookup: a connected
    UDP socket sends nothing).  The IPIP outer source, as the kernel's route would pick."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((addr, 9))
        return ip_int(s.getsockname()[0])


@dataclass
class Neighbours:
    """Real-server MACs for DR/TUN frames: resolved in the control thread, read in the
    dataplane thread (a dict swap is atomic under the GIL).  Keyed by the real server's
    address, which ``row_addr`` reads from the dest row (a DR packet's own destination
    is the VIP; a tunnelled one's outer destination is the RIP)."""

    lookup: Callable[[str], Any]  # netctl.neighbour
    row_addr: Callable[[int], int]  # dest row -> real-server address (host order)
    table: dict[int, tuple[int, bytes, bytes]] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)

    def resolve(self, dest_row: int, dst_ip: int = 0) -> tuple[int, bytes, bytes] | None:
        addr = self.row_addr(int(dest_row))
        got = self.table.get(addr)
        if got is None:
            self.missing.add(addr)
        return got

    def next_hops(self) -> dict[int, tuple[int, int, bytes, bytes]]:
        """RIP -> (ifindex, MTU, out MAC, server MAC), for the C loop's DR frames."""
        return {addr: (ifindex, _mtu(ifindex), src, dst) for addr, (ifindex, src, dst) in self.table.items()}

    def refresh(self, addrs, between: Callable[[], None] | None = None) -> None:
        """Look every address up again (``between`` runs after each: a lookup of a dead
        server waits its timeout, and the watchdog must not starve meanwhile)."""
        # Take the missing set first, in one swap: the dataplane thread may add to it
        # meanwhile, and what it adds then waits for the next refresh instead of being lost.
        missing, self.missing = self.missing, set()
        table = dict(self.table)
        for a in set(int(x) for x in addrs) | missing:
            try:
                n = self.lookup(ip_str(a))
            except Exception as exc:  # noqa: BLE001 - logged; the address is retried later
                log.warning("cannot resolve the MAC of real server %s: %s", ip_str(a), exc)
                continue
            finally:
                if between is not None:
                    between()
            table[a] = (int(n.ifindex), mac_bytes(n.src_mac), mac_bytes(n.mac))
        self.table = table


def _mtu(ifindex: int) -> int:
    try:
        with open(f"/sys/class/net/{socket.if_indextoname(ifindex)}/mtu") as f:
            return int(f.read())
    except OSError:
        return 1500  # Ethernet's; the frame send would fail and count, never hang




def _base_device(dev: str) -> str:
    return dev.split(":", 1)[0]  # lvs.cf labels: eth0:1 is an address label on eth0


class Director:
    def __init__(self, path: str | None, *, io: str = "auto", queue: int = 0, fail_open: bool = True,
                 status_path: str | None = None, control_path: str | None = None,
                 capacity: int = CONN_TABLE_CAPACITY,
                 ctl: Any = None, adapters: dict[str, Callable[..., Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 make_health: Callable[..., Any] = HealthRunner,
                 standby: bool = False, notify_fd: int | None = None, workers: int = 1,
                 xdp_mode: str = "auto", busy_poll_us: int = 0, metrics: str | None = None,
                 notifier: Notifier | None = None, web_control_path: str | None = None,
                 web_group: int | None = None, expire_nodest_conn: bool = False,
                 expire_quiescent_template: bool = False, defense: Defense | None = None) -> None:  # fmt: skip
        if io not in IO_CHOICES and not (adapters and io in adapters):
            raise DirectorError(f"--io {io}: choose one of {', '.join(IO_CHOICES)}")
        if workers < 1:  # the queue range itself is the plan's to check
            raise DirectorError(f"--workers {workers}: at least 1")
        if workers > 1 and io not in WORKER_IOS:
            raise DirectorError(f"--workers {workers}: several workers need --io nfq-loop or afxdp, not {io}")
        self.workers = workers
        self.path = path
        self.io = io
        if xdp_mode not in XDP_MODES:
            raise DirectorError(f"--xdp-mode {xdp_mode}: choose one of {', '.join(XDP_MODES)}")
        self.xdp_mode = xdp_mode
        if not 0 <= busy_poll_us <= BUSY_POLL_MAX_US:
            raise DirectorError(f"--busy-poll {busy_poll_us}: 0 .. {BUSY_POLL_MAX_US} microseconds")
        if busy_poll_us and io != "afxdp":
            raise DirectorError("--busy-poll is for --io afxdp")
        self.busy_poll_us = busy_poll_us
        if metrics:
            from pylvs.metrics import parse_listen

            try:
                parse_listen(metrics)
            except ValueError as exc:
                raise DirectorError(f"--metrics: {exc}") from None
        self.queue = queue
        self.adapter_name = ""  # the --io adapter, "auto" resolved at start
        self.fail_open = fail_open
        self.status_path = status_path
        self.control_path = control_path
        self.control: ControlSocket | None = None
        # The web tool's socket (WEB_VERBS alone): only with a group to give it to.
        self.web_control_path = web_control_path if web_group is not None else None
        self.web_group = web_group
        self.web_control: ControlSocket | None = None
        self.capacity = capacity
        # The kernel's sysctls of these names, for the engine (--expire-nodest-conn, ...).
        self.expire = {"expire_nodest_conn": expire_nodest_conn, "expire_quiescent_template": expire_quiescent_template}
        self.defense = defense or Defense()  # drop_entry, drop_packet, secure_tcp (dataplane/defense.py)
        self.ctl = ctl
        self.adapters = adapters or {}
        self.clock = clock
        self.make_health = make_health  # (config, on_change) -> HealthRunner; tests give fake probes
        self.config: Config | None = None
        self.fwd: Forwarder | None = None
        self.adapter: Any = None
        self.capture = "nfqueue"
        self.neighbours: Neighbours | None = None
        self.stop_event = threading.Event()
        self.wake = Waker()  # signal handlers and threads wake the control loop (never an Event: wake.py)
        self.thread: threading.Thread | None = None
        self.thread_error: BaseException | None = None
        self.pending: set[str] = set()  # signals noticed, handled by the control loop
        self.reloads = 0
        self.failed_reloads = 0
        self.senders: list[Any] = []  # DR and reject senders beside an NFQUEUE adapter
        self.health: HealthRunner | None = None  # the nanny role: one check per real server
        self.pending_health: dict | None = None  # handed over from the health thread
        self.last_health: dict = {}  # the mapping the running tables were compiled with
        self.health_swaps = 0
        self.drained: set[tuple] = set()  # health keys of servers in server.state drain: weight 0
        # Managed by pulse (docs/ha.md): start standby, forward only between SIGUSR1
        # ("become active") and SIGUSR2 ("become standby"); report each role reached on
        # notify_fd as a line, so pulse announces the addresses once they are up.
        self.managed = standby
        self.want_active = not standby
        self.active = False
        self.notify_fd = notify_fd
        self.activations = 0
        self.plan: Any = None
        self.syncd: Any = None  # the connection-sync daemon (lvs.cf syncdaemon = 1, or pylvsadm's)
        self.sync_spec: Any = None  # what it was started with (ipvsadm -L --daemon lists it)
        self.sync_daemons: dict[str, tuple[Any, Any]] = {}  # pylvsadm --start-daemon's, by state
        self.notifier = notifier or Notifier(env={})  # systemd and the daemonizing parent
        self.lock: InstanceLock | None = None  # one lvs per network namespace
        self.metrics_listen = metrics
        self.metrics: Any = None  # pylvs.metrics.MetricsServer with --metrics
        self.started = time.time()
        self.last_reload: dict[str, Any] = {"ok": True, "time": self.started, "error": None}
        self.beats_seen = -1  # the dataplane's progress at the last watchdog ping
        self.next_dog = 0.0  # when WATCHDOG=1 is due next

    # -- configuration ---------------------------------------------------------------------
    def _read(self) -> Config:
        """The checked, adjusted Config of the file; every diagnostic logged.  Bare (no
        file): an empty table, whose defaults are ipvsadm's."""
        if self.path is None:
            return Config()
        try:
            return load_for_daemon(self.path, log)
        except ValueError as exc:  # a FOS file
            raise DirectorError(str(exc)) from None

    def _plan(self, config: Config):
        from pylvs.netctl import plan_for

        # Several workers: the rules spread flows over their queues (--queue-balance).
        queue = self.queue if self.workers == 1 else (self.queue, self.queue + self.workers - 1)
        return plan_for(config, queue=queue, capture=self.capture, fail_open=self.fail_open,
                        classify=self.classify_queue)

    @property
    def classify_queue(self) -> int | None:
        """The classify pass's queue, after the forwarding ones (docs/netctl.md): only the
        C loop serves one; with the Python adapters a real server of a fwmark, port-0 or
        FTP service has all its forwarded traffic untracked, as before."""
        return self.queue + self.workers if self.adapter_name == "nfq-loop" else None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        config = self._read()
        self.adapter_name = self._io_name(config)  # "auto" resolved once
        if self.workers > 1 and self.adapter_name not in WORKER_IOS:
            raise DirectorError(f"--workers {self.workers}: several workers need the nfq-loop or afxdp adapter, "
                                f"and --io {self.io} gave {self.adapter_name} here")
        self.capture = self.adapter_name if self.adapter_name in ("afpacket", "afxdp") else "nfqueue"
        plan = self._plan(config)  # before touching anything: a plan error leaves no trace
        if self.ctl is None:  # the real kernel: first the lock, so what is left over has a dead owner
            from pylvs.netctl import NetCtl

            self.lock = InstanceLock("lvs", {"config": self.path, "standby": self.managed})
            self.lock.acquire()  # AlreadyRunning: nothing touched
            try:
                NetCtl.clean_stale()
                self._clean_stale_xdp()
            except BaseException:
                self._release_lock()
                raise
            self.ctl = NetCtl()
        self.health = self.make_health(config, self._on_health)
        self.health.first_round()  # the first tables hold the servers that answer now
        self.pending_health = None
        self.last_health = self.health.health()
        local = self._local_addresses()
        fwd = Forwarder(tb.compile(config, self._table_health(self.last_health), local=local),
                        capacity=self.capacity, tunnel_src=self._tunnel_src(config), clock=self.clock,
                        defense=self.defense, **self.expire)  # fmt: skip
        fwd.local = local
        mine = _local_servers(config, local) if self.adapter_name in LOCAL_STACK_LESS else []
        if mine:
            log.warning("--io %s cannot hand packets to this box's own stack: the real server(s) at its own "
                        "address (%s, LOCALNODE) get none; --io nfq-loop serves them",
                        self.adapter_name, ", ".join(mine))  # fmt: skip
        self.config, self.fwd = config, fwd
        fwd.warm_up()  # before the rules: no packet waits for the JIT
        self.plan = plan
        try:
            if self.metrics_listen:
                from pylvs.metrics import MetricsServer

                self.metrics = MetricsServer(self.metrics_listen, self.status)
                self.metrics.start()  # a port in use refuses the start, before any rule
            self.syncd = self._make_syncd(config)
            if self.want_active and not self.pending & {"SIGTERM", "SIGINT"}:  # stopped during start-up: never active
                self.activate()
            elif self.syncd is not None:
                self.syncd.start_backup()
            self.health.start()
            if self.control_path:
                self.control = ControlSocket(self.control_path)
            if self.web_control_path:
                self.web_control = ControlSocket(self.web_control_path, verbs=WEB_VERBS, mode=WEB_MODE,
                                                 group=self.web_group, io_timeout=WEB_IO_TIMEOUT)  # fmt: skip
        except BaseException as exc:
            # Every step runs, and the reason that stopped the start is the one reported.
            for step in (self._close_controls, self.health.stop, self.syncd.stop if self.syncd is not None else None,
                         self.deactivate, self._close_metrics, self._release_lock):  # fmt: skip
                if step is None:
                    continue
                try:
                    step()
                except Exception as also:  # noqa: BLE001 - logged; the first error is raised
                    log.error("cleaning up after a failed start: %s", also)
            raise exc
        n = sum(1 for v in config.virtuals if v.active)
        source = self.path or "no lvs.cf (bare: pylvsadm configures the table)"
        log.info("started %d virtual service(s) from %s, network %s, io %s, generation %d%s", n, source,
                 config.network, self.adapter_name, fwd.tables.generation,
                 "" if self.active else ", standby")  # fmt: skip
        if self.status_path:
            self.write_status()  # there once start() returns: `pylvs status` right after a start sees it
        if not self.active:
            self._notify("standby")

    def activate(self) -> None:
        """Take the addresses, install the capture rules and forward (pulse: become active)."""
        assert self.fwd is not None and self.config is not None
        if self.active:
            return
        config = self.config
        self.stop_event = threading.Event()  # one per activation: the last one stays set
        # The reader first, then the rules, then the addresses (NetCtl.apply's own order):
        # a VIP packet never meets rules without a reader, which the fail-open bypass
        # would hand to the local stack, which answers RST (docs/ha.md, takeovers).
        if tb.needs_next_hops(config) or self.adapter_name == "afxdp":  # afxdp: NAT's too
            self.neighbours = Neighbours(self.ctl.neighbour, self._row_addr)
            self.refresh_neighbours()
        self.adapter = self._make_adapter(config)
        self.thread = threading.Thread(target=self._dataplane, name="pylvs-dataplane", daemon=True)
        self.thread.start()
        try:
            self.ctl.apply(self.plan)
        except BaseException:
            self._stop_reader()
            raise
        self.active = True
        self.activations += 1
        log.info("active: forwarding, addresses %s", ", ".join(str(a) for a in self.plan.addresses) or "none")
        self._notify("active")  # first: pulse's gratuitous ARPs need not wait for the sync switch
        if self.syncd is not None:
            self.syncd.start_master()  # waits up to a receive timeout for the backup thread

    def deactivate(self) -> None:
        """Stop forwarding, remove rules and addresses (pulse: become standby).  The
        connection table, the health checks and the compiled tables stay.  The addresses
        go first, then the rules (NetCtl.teardown's order), then the reader: until the
        rules are gone every captured packet still has a reader."""
        failed: Exception | None = None
        if self.ctl is not None:
            try:
                self.ctl.teardown()
            except Exception as exc:  # noqa: BLE001 - raised below, once the reader has stopped
                failed = exc
        self._stop_reader()
        if failed is not None:
            raise failed
        was, self.active = self.active, False
        if was:
            if self.syncd is not None:
                self.syncd.start_backup()
            log.info("standby: addresses and rules removed")
            self._notify("standby")

    def _stop_reader(self) -> None:
        """Stop the dataplane thread and close the adapter and the senders."""
        self.stop_event.set()
        if hasattr(self.adapter, "request_stop"):
            self.adapter.request_stop()  # the C loop looks at a flag, not at the event
        if self.thread is not None:
            self.thread.join(ADAPTER_JOIN_TIMEOUT)
            if self.thread.is_alive():
                log.error("the dataplane thread did not stop within %.0f s", ADAPTER_JOIN_TIMEOUT)
            self.thread = None
        try:
            if self.adapter is not None and hasattr(self.adapter, "close"):
                self.adapter.close()
        except RuntimeError as exc:  # a stuck C loop is leaked, never freed under itself
            log.error("%s", exc)
        self.adapter = None
        for sender in self.senders:
            sender.close()
        self.senders = []

    def _make_syncd(self, config: Config) -> Any:
        if not config.syncdaemon:
            return None
        from pylvs.ha.roles import peer_private_address
        from pylvs.ha.syncd import SyncDaemon, iface_address
        from pylvs.ipvsadm.command import DaemonSpec

        peer = peer_private_address(config) if config.syncd_unicast else None
        self.sync_spec = DaemonSpec(state="", mcast_interface=config.syncd_iface, syncid=config.syncd_id & 0xFF,
                                    mcast_port=config.syncd_port)  # fmt: skip
        return SyncDaemon(self.fwd, syncid=config.syncd_id & 0xFF, port=config.syncd_port,
                          iface_addr=iface_address(config.syncd_iface), unicast_peer=peer)

    def _notify(self, line: str) -> None:
        if self.notify_fd is None:
            return
        try:
            os.write(self.notify_fd, (line + "\n").encode())
        except OSError as exc:  # pulse is gone: it will not read any more (PDEATHSIG follows)
            log.warning("cannot tell pulse %r: %s", line, exc)

    def _row_addr(self, row: int) -> int:
        return int(self.fwd.tables.dest[row, ADDR])

    def _tunnel_src(self, config: Config) -> int:
        rips = [s.address for v in config.virtuals if v.active for s in v.servers
                if s.address and s.active and server_forward(config, s) == "tunnel"]  # fmt: skip
        for rip in rips:
            try:
                return source_address_towards(str(rip))
            except OSError as exc:  # no route yet: tried again at the next change
                log.warning("tunnel server %s: no route (%s); its packets cannot leave until there is one", rip, exc)
        return 0

    def reload(self) -> bool:
        """SIGHUP: check, compile, swap; a bad file changes nothing.  True if swapped.
        systemd hears RELOADING=1 before and READY=1 after, whatever the outcome."""
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.ready(self.summary())

    def _reload_failed(self, message: str) -> bool:
        self.failed_reloads += 1
        self.last_reload = {"ok": False, "time": time.time(), "error": message}
        log.error("%s", message)
        return False

    def _reload(self) -> bool:
        assert self.fwd is not None
        if self.path is None:
            log.info("SIGHUP: no lvs.cf to read (bare); the table stays as pylvsadm made it")
            return False
        try:
            config = self._read()
        except (dg.ConfigError, DirectorError, ValueError) as exc:
            return self._reload_failed(f"reload refused, still running generation {self.fwd.tables.generation}: "
                                       f"{exc}")  # fmt: skip
        try:
            self.install(config, "reload")
        except DirectorError as exc:
            return self._reload_failed(f"reload: {exc}")
        self.reloads += 1
        self.last_reload = {"ok": True, "time": time.time(), "error": None}
        log.info("reloaded %s: generation %d", self.path, self.fwd.tables.generation)
        return True

    def install(self, config: Config, why: str) -> None:
        """Compile ``config`` and swap it in (a reload, a pylvsadm change).  DirectorError
        says why the running tables stay, and then nothing has changed: first what can be
        refused without touching anything, then the kernel side (put back if a later step
        fails), then the health checks, then the swap."""
        generation = self.fwd.tables.generation
        self.fwd.local = self._local_addresses()  # a server may have become (or left) this box
        try:
            plan = self._plan(config)
            # a config the tables refuse changes nothing
            self.fwd.compile(config, self._table_health(self.health.health(), config))
            self._check_adapter(config)
            if self.active:
                self._check_xdp_devices(config, plan)
        except (dg.ConfigError, DirectorError, ValueError) as exc:
            raise DirectorError(f"refused, still running generation {generation}: {exc}") from None
        try:
            if self.active:
                self.ctl.update(plan)
            self.health.update_config(config)  # servers that stay keep their state
        except Exception as exc:  # noqa: BLE001 - the old tables keep forwarding
            if self.active:
                try:
                    self.ctl.update(self.plan)  # the running generation's rules and addresses back
                except Exception as also:  # noqa: BLE001 - logged; the first error is the answer
                    log.error("%s: could not put the kernel side back: %s", why, also)
            raise DirectorError(f"could not be applied ({exc}); still running generation {generation}") from None
        self.last_health = self.health.health()
        new = self.fwd.compile(config, self._table_health(self.last_health, config))
        tunnel_src = self.fwd.tunnel_src or self._tunnel_src(config)  # a first tunnel server
        if tunnel_src != self.fwd.tunnel_src:
            self.fwd.set_tunnel_src(tunnel_src)  # before the swap: no IPIP packet with source 0
        self.fwd.swap(new)
        self.config, self.plan = config, plan
        self.drained &= _server_keys(config)  # a drained server that left the config is forgotten
        if self.active and self.neighbours is None and tb.needs_next_hops(config):
            self.neighbours = Neighbours(self.ctl.neighbour, self._row_addr)  # a first DR/TUN server
        if why == "reload":
            self.refresh_neighbours()
        elif self.neighbours is not None:
            # pylvsadm answers at once, as ipvsadm: new servers' MACs are looked up by the
            # control loop next (a dead server's lookup waits its timeout).
            self.neighbours.missing.update(int(a) for a in dest_addresses(new) if int(a) not in self.neighbours.table)
        if self.active and self.adapter_name == "afpacket" and self.adapter is not None:
            try:
                self.adapter.set_vips(_afpacket_tap(config, start=False)[1])  # the tap's filter: the VIPs of now
            except OSError as exc:  # the count was checked: the kernel refused otherwise
                log.error("%s: the AF_PACKET filter could not be updated (%s); VIPs added are not captured "
                          "until a restart", why, exc)  # fmt: skip
        if self.active and plan.xdp is not None and hasattr(self.adapter, "set_keys"):
            try:
                self.adapter.set_keys(plan.xdp)  # afxdp: what its program redirects
            except OSError as exc:  # the plan checked the sizes: the kernel refused otherwise
                log.error("%s: the XDP program's maps could not be updated (%s); the services added "
                          "are not captured until a restart", why, exc)  # fmt: skip
        if why != "reload":
            log.info("%s: generation %d", why, new.generation)

    def stop(self) -> None:
        self.notifier.stopping()
        self._close_controls()
        if self.health is not None:
            self.health.stop()
        if self.syncd is not None:
            self.syncd.stop()
        for d, _ in self.sync_daemons.values():
            d.stop()
        try:
            self.deactivate()
        finally:
            self._close_metrics()
            if self.status_path:
                Path(self.status_path).unlink(missing_ok=True)
            self._release_lock()  # last: the next director may clean up after us only now
            self.wake.close()
        log.info("stopped")

    def _close_controls(self) -> None:
        for ctl in (self.control, self.web_control):
            if ctl is not None:
                ctl.close()
        self.control = self.web_control = None

    def _close_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def _release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def summary(self) -> str:
        """One line for systemd's STATUS= and `systemctl status`."""
        if self.fwd is None or self.config is None:
            return "starting"
        n = sum(1 for v in self.config.virtuals if v.active)
        return (f"{'active: forwarding' if self.active else 'standby'}, {n} virtual service(s), "
                f"generation {self.fwd.tables.generation}, io {self.adapter_name}")

    def refresh_neighbours(self) -> None:
        """Resolve the real servers' MACs (DR/TUN) and give them to the C loop."""
        if self.neighbours is None:
            return
        self.neighbours.refresh(dest_addresses(self.fwd.tables), between=lambda: self._watchdog(self.clock()))
        self.fwd.set_next_hops(self.neighbours.next_hops())

    # -- the dataplane thread --------------------------------------------------------------
    def _dataplane(self) -> None:
        try:
            self.adapter.run(self.stop_event)
        except BaseException as exc:  # noqa: BLE001 - reported to the control thread
            self.thread_error = exc
            log.exception("the dataplane thread failed")
        finally:
            self.wake.set()

    # -- adapters --------------------------------------------------------------------------
    def _xdp_devices(self, config: Config, keys) -> list[str]:
        """Where the afxdp program must run: the plan's devices and, in NAT, those the
        routes to the real servers leave by (their replies come in there)."""
        from pylvs.dataplane.io.afxdp import route_devices

        devices = list(keys.devices)
        if tb.uses_nat(config):
            devices += route_devices(a for a, _, _ in keys.servers)
        return list(dict.fromkeys(devices))

    def _check_adapter(self, config: Config) -> None:
        """What the running adapter cannot carry without a restart (it was made for the
        forwarding methods and devices of its start)."""
        name, before = self.adapter_name, forward_methods(self.config) if self.config else frozenset()
        if name in ("nfq-native", "nfqueue") and "direct" in forward_methods(config) - before:
            raise DirectorError(f"--io {name} started without a direct-routing sender: a direct-routing server "
                                "takes a restart (the default --io nfq-loop sends them itself)")  # fmt: skip
        if name == "afpacket" and tb.uses_nat(config):
            raise DirectorError("--io afpacket forwards direct routing and tunnelling; NAT uses NFQUEUE")
        mine = _local_servers(config, self.fwd.local) if name in LOCAL_STACK_LESS else []
        if mine:
            raise DirectorError(f"--io {name} cannot hand packets to this box's own stack, and "
                                f"{', '.join(mine)} is at its own address (LOCALNODE): run --io nfq-loop")
        if name == "afxdp" and any(v.active and v.manual and v.address is not None for v in config.virtuals):
            # (afpacket: the plan refuses a VIP without a device by name)
            raise DirectorError("--io afxdp captures on the VIPs' devices and a service added by hand has none: "
                                "run --io nfq-loop for pylvsadm's services")  # fmt: skip
        if name == "afpacket" and self.adapter is not None:
            from pylvs.dataplane.io.afpacket import MAX_FILTER_VIPS

            dev, vips = _afpacket_tap(config, start=False)
            if dev not in (None, self.adapter.in_ifname):
                raise DirectorError(f"--io afpacket listens on {self.adapter.in_ifname}; VIPs on {dev} take a restart")
            if len(vips) > MAX_FILTER_VIPS:
                raise DirectorError(f"--io afpacket: {len(vips)} VIPs, and its tap's filter takes at most "
                                    f"{MAX_FILTER_VIPS}")  # fmt: skip

    def _check_xdp_devices(self, config: Config, plan) -> None:
        """A reload may change what the running program redirects, not where it runs."""
        if plan.xdp is None or not hasattr(self.adapter, "devices"):
            return
        new = set(self._xdp_devices(config, plan.xdp)) - self.adapter.devices
        if new:
            raise DirectorError(f"afxdp: the new configuration needs the XDP program on {', '.join(sorted(new))} "
                                "as well, which takes a restart (the running one is on "
                                f"{', '.join(sorted(self.adapter.devices))})")

    @staticmethod
    def _clean_stale_xdp() -> None:
        """What a killed afxdp director left on the devices (whatever --io is now)."""
        from pylvs.dataplane.io import afxdp

        for dev in afxdp.clean_stale():
            log.info("removed stale XDP program from %s", dev)

    def _io_name(self, config: Config) -> str:
        if self.io != "auto":
            return self.io
        try:  # built with the package whenever libnetfilter_queue was there to link against
            from pylvs.dataplane.io import nfq_loop  # noqa: F401
        except (ImportError, AttributeError):
            return "nfqueue"
        return "nfq-loop"

    def _make_adapter(self, config: Config) -> Any:
        name = self.adapter_name
        assert self.fwd is not None
        handle = self.fwd.handle
        if name in self.adapters:
            return self.adapters[name](self, handle)
        if name == "afpacket":
            if tb.uses_nat(config):
                raise DirectorError("--io afpacket forwards direct routing and tunnelling; NAT uses NFQUEUE")
            from pylvs.dataplane.io.afpacket import AfPacketLoop

            dev, vips = _afpacket_tap(config)
            return AfPacketLoop(dev, self.fwd, vips=vips)
        if name == "afxdp":
            from pylvs.dataplane.io.afxdp import AfXdpLoop

            keys = self.plan.xdp
            devices = self._xdp_devices(config, keys)
            loop = AfXdpLoop(devices, self.fwd, keys, mode=self.xdp_mode, fail_open=self.fail_open,
                             busy_poll_us=self.busy_poll_us, workers=self.workers)
            log.info("AF_XDP: %s", ", ".join(f"{d} ({m} mode)" for d, m in loop.modes.items()))
            return loop
        if name == "nfq-loop":  # DR frames (GSO ones whole, cut by the kernel) and rejects leave from C
            from pylvs.dataplane.io.nfq_loop import Workers

            return Workers(self.queue, self.workers, self.fwd, classify=self.classify_queue,
                           fail_open=self.fail_open, gso=True)
        # The Python DR sender's frames must fit the link, so with it the queue hands DR
        # packets over segmented (no GSO); NAT and tunnel verdicts go back whole.
        direct = "direct" in forward_methods(config)
        gso = not direct
        from pylvs.dataplane.io.afpacket import DrSender
        from pylvs.dataplane.io.rawip import RejectSender

        on_dr = DrSender(self.neighbours.resolve) if direct else None
        on_reject = RejectSender()
        self.senders = [x for x in (on_dr, on_reject) if x is not None]
        if name == "nfq-native":
            from pylvs.dataplane.io.nfq_native import NativeQueue

            return NativeQueue(self.queue, handle, fail_open=self.fail_open, gso=gso, on_dr=on_dr,
                               on_reject=on_reject)  # fmt: skip
        from pylvs.dataplane.io.nfqueue import PacketQueue

        return PacketQueue(self.queue, handle, fail_open=self.fail_open, on_dr=on_dr, on_reject=on_reject)

    # -- health --------------------------------------------------------------------------
    def _on_health(self, health: dict) -> None:
        """From the health thread: hand the new mapping to the control thread."""
        self.pending_health = health
        self.wake.set()

    def apply_health(self) -> None:
        """Recompile with the latest health mapping and swap (control thread)."""
        health, self.pending_health = self.pending_health, None
        if health is None or self.config is None:
            return
        before = self.last_health
        new = self.fwd.compile(self.config, self._table_health(health))
        self.fwd.swap(new)
        self.last_health = health
        self.health_swaps += 1
        # quiesce_server: a server coming (back) online resets the service's least-
        # connection counts, so it is not flooded as the emptiest server (reference 1.7).
        quiesce = {tb.health_key(self.config, v, s)[0] for v in self.config.virtuals if v.quiesce_server
                   for s in v.servers}  # fmt: skip
        for skey in {k[0] for k, h in health.items() if h.up and not before.get(k, h).up} & quiesce:
            i = tb.service_index(new, skey)
            if i >= 0:
                n = self.fwd.reset_counts(i)
                log.info("quiesce_server: least-connection counts of %s reset (%d connections)", skey, n)
        self.refresh_neighbours()  # a sorry server may be new

    def _local_addresses(self) -> frozenset[str]:
        """This namespace's addresses: a real server at one is served by the director's
        own stack (LOCALNODE)."""
        return self.ctl.local_addresses()

    def _table_health(self, health: dict, config: Config | None = None) -> dict:
        """The mapping the tables are compiled with: the checks' ``health`` with the drained
        servers of ``config`` (the running one by default) at weight 0 while up.  Every
        compile goes through here, so a drain outlives health changes and reloads."""
        if not self.drained:
            return health
        out = dict(health)
        for key in self.drained & _server_keys(self.config if config is None else config):
            h = out.get(key, tb.HealthState())  # a server without a check (pylvsadm's) is up
            if h.up:
                out[key] = h._replace(weight=0)
        return out

    def _recompile(self) -> None:
        """The running config compiled again with the health it runs with (a drain changed)."""
        self.fwd.swap(self.fwd.compile(self.config, self._table_health(self.last_health)))

    def handle_control(self, req: dict) -> dict:
        """One control request (``pylvs.control``); answered in the control thread."""
        cmd = str(req.get("cmd", ""))
        if cmd.startswith("ipvs."):
            from pylvs.ipvsadm import server

            return server.handle(self, req)
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "reload":
            return self._control_reload()
        if cmd == "server.state":
            return self._server_state(str(req["virtual"]), str(req["server"]), str(req["state"]))
        if cmd != "force":
            return {"ok": False, "error": f"unknown command {req.get('cmd')!r}"}
        state = req["state"]
        if state not in FORCE_STATES:
            return {"ok": False, "error": f"state must be one of {', '.join(FORCE_STATES)}"}
        keys = self.health.find(str(req["address"]), req.get("port"))
        if not keys:
            return {"ok": False, "error": f"no health check for {req['address']}:{req.get('port') or '*'}"}
        for key in keys:
            self.health.force(key, FORCE_STATES[state])
        log.info("health of %s:%s forced %s from the control socket", req["address"], req.get("port") or "*", state)
        return {"ok": True, "checks": len(keys)}

    def _control_reload(self) -> dict:
        """``reload``: SIGHUP's path, now, and its outcome."""
        def reply(ok: bool, error: str | None) -> dict:
            return {"ok": ok, "generation": int(self.fwd.tables.generation), "serial_no": self.config.serial_no,
                    "error": error}  # fmt: skip

        if self.path is None:
            return reply(False, "a bare director (no lvs.cf) has no file to reload: pylvsadm configures its table")
        log.info("reload asked on the control socket")
        ok = self.reload()
        return reply(ok, None if ok else self.last_reload["error"])

    def _server_state(self, virtual: str, server: str, state: str) -> dict:
        """``server.state``: drain (weight 0 for new connections, the held ones stay), maint
        (forced down through its check, nanny's SIGUSR1) or ready (back to its check)."""
        if state not in ADMIN_STATES:
            return {"ok": False, "error": f"state must be one of {', '.join(ADMIN_STATES)}"}
        v = next((x for x in self.config.virtuals if x.name == virtual), None)
        if v is None:
            return {"ok": False, "error": f"no virtual {virtual!r} in the running configuration"}
        s = next((x for x in v.servers if x.name == server), None)
        if s is None or s.address is None:
            return {"ok": False, "error": f"virtual {virtual!r} has no server {server!r}"}
        key = tb.health_key(self.config, v, s)
        try:  # maint forces it down, drain and ready hand it back to its check (the states exclude each other)
            self.health.force(key, False if state == "maint" else None)
        except KeyError:  # no check: inactive, or added by pylvsadm (unchecked, as ipvsadm's)
            if state == "maint":
                return {"ok": False, "error": f"server {server!r} of virtual {virtual!r} has no health check "
                                             "(inactive, or added by pylvsadm): it cannot be forced down"}  # fmt: skip
        was_drained = key in self.drained
        if state == "drain":
            self.drained.add(key)
        else:
            self.drained.discard(key)
        if was_drained != (key in self.drained):
            self._recompile()  # maint's recompile follows the health change (apply_health)
        log.info("server %s of virtual %s: %s (from the control socket)", server, virtual, state)
        return {"ok": True, "state": state}

    # -- the control thread ----------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.pending.add(signal.Signals(signum).name)
        self.wake.set()

    def _on_role_signal(self, signum: int, _frame: Any) -> None:
        # Level-triggered: the last signal says what pulse wants; the loop gets there.
        self.want_active = signum == signal.SIGUSR1
        self.wake.set()

    def install_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        if self.managed:
            for sig in (signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(sig, self._on_role_signal)

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit 0) or a dataplane failure (exit 1); whatever
        happens, the rules and addresses go with the director."""
        try:
            return self._serve()
        finally:
            self.stop()

    def _serve(self) -> int:
        next_est = next_status = next_neigh = self.clock()
        next_gc = next_est + GC_INTERVAL
        next_defense = next_est + DEFENSE_TIMER_PERIOD
        next_miss = next_est
        code = 0
        while True:
            self.wake.wait(CONTROL_WAKEUP)
            if self.pending & {"SIGTERM", "SIGINT"}:
                log.info("%s: shutting down", "/".join(sorted(self.pending & {"SIGTERM", "SIGINT"})))
                break
            if "SIGHUP" in self.pending:
                self.pending.discard("SIGHUP")
                self.reload()
            if self.want_active != self.active:
                try:
                    self.activate() if self.want_active else self.deactivate()
                except Exception as exc:  # noqa: BLE001 - pulse sees the exit (CHILDFAIL), the peer takes over
                    log.error("cannot become %s: %s", "active" if self.want_active else "standby", exc)
                    code = 1
                    break
            if self.control is not None:
                self.control.poll(self.handle_control)
            if self.web_control is not None:
                self.web_control.poll(self.handle_control, WEB_ACCEPT_PER_POLL)
            if self.pending_health is not None:
                self.apply_health()
            if self.thread is not None and not self.thread.is_alive():
                log.error("the dataplane stopped: %s", self.thread_error)
                code = 1
                break
            now = self.clock()
            if now >= next_est:
                self.fwd.tick_estimators()
                next_est = now + EST_INTERVAL
            if now >= next_gc:
                self.fwd.collect_garbage()
                next_gc = now + GC_INTERVAL
            if now >= next_defense:
                self.fwd.defense_tick()
                next_defense = now + DEFENSE_TIMER_PERIOD
            self.fwd.expire(EXPIRE_SLICE)
            if self.neighbours is not None and hasattr(self.adapter, "missing_addresses"):
                self.neighbours.missing.update(self.adapter.missing_addresses())
            if self.neighbours is not None and (now >= next_neigh or (self.neighbours.missing and now >= next_miss)):
                self.refresh_neighbours()  # control thread: may wait
                next_neigh = now + NEIGHBOUR_REFRESH
                next_miss = now + NEIGHBOUR_RETRY
            self._watchdog(now)
            if now >= next_status:
                self.notifier.status(self.summary())  # sent only when it changed
                if self.status_path:
                    self.write_status()
                next_status = now + STATUS_INTERVAL
        return code

    def _watchdog(self, now: float) -> None:
        """WATCHDOG=1 when due and the dataplane goes round (else systemd's WatchdogSec
        runs out and it restarts us).  Also called between slow steps of the control
        loop (one neighbour lookup may wait 2 s for a dead real server)."""
        if not self.notifier.watchdog_usec or now < self.next_dog:
            return
        if self._dataplane_alive():
            self.notifier.watchdog()
        self.next_dog = now + self.notifier.watchdog_interval

    def _dataplane_alive(self) -> bool:
        """The watchdog's question, asked from the control loop (which is alive, since it
        asks): is the dataplane loop still going round?  The C loops count their passes
        (a pass ends at least every RUN_SLICE_MS, with or without traffic)."""
        if not self.active:
            return True
        if self.thread is None or not self.thread.is_alive():
            return False
        beats = getattr(self.adapter, "beats", None)
        if beats is None:
            return True
        alive, self.beats_seen = beats != self.beats_seen, beats
        return alive

    def status(self) -> dict[str, Any]:
        """The status file and the metrics: pylvsadm's view of the table (``ipvs.get``,
        one code for all three) and the director's own state."""
        from pylvs.ipvsadm import server

        table = server.get(self)
        snap = table["snapshot"]
        snap.update(timeouts=table["timeouts"], daemons=table["daemons"])
        a = self.adapter  # once: a takeover may set it to None meanwhile (the metrics thread asks too)
        adapter = a.stats() if a is not None and hasattr(a, "stats") else {}
        if "engine_us_per_batch" in adapter:  # the C loop times its own batches
            snap.update(batches=adapter["batches"], engine_us_per_batch=adapter["engine_us_per_batch"])
        snap.update(pid=os.getpid(), config=self.path, io=self.adapter_name, network=self.config.network,
                    serial_no=self.config.serial_no, started=self.started, last_reload=self.last_reload,
                    managed=self.managed, metrics=self.metrics_listen,
                    role="active" if self.active else "standby", activations=self.activations,
                    sync=self.syncd.stats() if self.syncd is not None else None,
                    reloads=self.reloads, failed_reloads=self.failed_reloads,
                    adapter=adapter,
                    senders={type(x).__name__: dict(x.stats) for x in self.senders},
                    health=self._health_entries(), virtuals=self._virtuals(), expire=dict(self.expire),
                    health_swaps=self.health_swaps)  # fmt: skip
        return snap

    def _health_entries(self) -> list[dict]:
        """The health runner's snapshot with each server's admin state (server.state):
        ``maint`` while forced down, ``drain`` while drained."""
        if self.health is None:
            return []
        entries = self.health.snapshot()
        for e in entries:
            e["admin"] = "maint" if e["mode"] == FORCED_DOWN else "drain" if e["key"] in self.drained else None
        return entries

    def _virtuals(self) -> list[dict]:
        """The running config's virtual services by name, so a page can name the table's rows."""
        config = self.config
        return [{"name": v.name, "active": v.active, "vip": None if v.vip is None else str(v.vip), "port": v.port,
                 "protocol": v.protocol, "fwmark": v.fwmark, "scheduler": v.scheduler,
                 "servers": [{"name": s.name, "address": None if s.address is None else str(s.address),
                              "port": tb.dest_port(config, v, s), "weight": s.weight, "active": s.active,
                              "admin": "drain" if s.address is not None and tb.health_key(config, v, s)
                              in self.drained else None}
                             for s in v.servers]}
                for v in config.virtuals]  # fmt: skip

    def write_status(self) -> None:
        """The status file, replaced atomically (readers never see half a file)."""
        write_atomic(Path(self.status_path), json.dumps(self.status(), indent=1, sort_keys=True,
                                                        default=str))  # addresses as text


# Adapters that cannot give a packet back to the kernel (a V_PASS is dropped and counted).
LOCAL_STACK_LESS = ("afxdp", "afpacket")  # adapters that cannot hand a packet to the box's own stack


def _afpacket_tap(config: Config, *, start: bool = True) -> tuple[str | None, set[int]]:
    """Where ``--io afpacket`` listens (the one device of every VIP) and the VIPs its
    filter lets through.  A reload (``start=False``) may leave no VIP: (None, set())."""
    devs = {_base_device(v.address.device) for v in config.virtuals if v.active and v.address}
    if not devs and not start:
        return None, set()
    if len(devs) != 1:
        raise DirectorError(f"--io afpacket needs every VIP on one device, got {sorted(devs)}")
    return devs.pop(), {ip_int(v.address.ip) for v in config.virtuals if v.active and v.address}


def _local_servers(config: Config, local: frozenset[str]) -> list[str]:
    """``virtual/server`` names of the active real servers at one of ``local``'s addresses."""
    return [f"{v.name}/{s.name}" for v in config.virtuals if v.active for s in v.servers
            if s.active and s.address is not None and str(s.address) in local]


def _server_keys(config: Config) -> set[tuple]:
    """The health keys of every real server of ``config``."""
    return {tb.health_key(config, v, s) for v in config.virtuals for s in v.servers if s.address is not None}


def read_status(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
