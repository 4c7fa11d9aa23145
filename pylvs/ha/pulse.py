"""The pulse role: heartbeats, failover and the lvs director as a child (reference 2).

``pylvs pulse -c FILE`` (``pylvs.cli.pulse``) runs a ``Pulse``: the adapter around the
step function of ``pylvs.ha.node``.  It owns the heartbeat sockets, the clock, the
signals and the director process, and turns the node's actions into I/O:

* the director (``pylvs lvs --standby``) is started at once and kept ready: tables
  compiled, JIT warm, health checks and connection sync running.  Becoming active is a
  SIGUSR1 to it (it installs the rules and takes the addresses, then says ``active`` on
  the notify pipe), becoming standby a SIGUSR2.  This replaces piranha's "spawn lvsd on
  activation", which would cost seconds of start-up inside every failover and lose the
  synced connection table.  The director dies with pulse (PR_SET_PDEATHSIG).
* gratuitous ARP (``pylvs.ha.garp``, send_arp's frame) goes out once the director says
  the addresses are up: ``garp_count`` frames ``garp_interval`` apart, again when the
  master hears an active backup, and one frame per address every ``garp_refresh`` s while
  active (pylvs; see docs/ha.md for why).
* a director that exits unasked is CHILDFAIL (reference 2.7); it is started again in
  standby, at most every CHILD_RESPAWN_DELAY s, and may activate once the peer is heard
  active.
* config sync (``config_sync = 1``): the primary serves its lvs.cf, the backup fetches it
  every ``config_sync_interval`` s and, when a newer checked file arrived, reloads.
* a control socket (``pylvs.control``, ``--control``, root's) answers ``status`` and
  ``reload`` in the loop, between heartbeats; with ``--web-group`` a second one
  (``--web-control``, 0660) offers them to ``pylvs web``, and the director pulse runs
  opens its own web socket (``--lvs-web-control``).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pylvs.config import diagnostics as dg
from pylvs.config.check import load_for_daemon
from pylvs.config.model import ANY_ADDRESS, Config
from pylvs.control import PULSE_WEB_VERBS, WEB_MODE, ControlSocket
from pylvs.ha import heartbeat as hb
from pylvs.ha import node as nd
from pylvs.ha import roles
from pylvs.service.daemon import write_atomic
from pylvs.service.lock import InstanceLock
from pylvs.service.notify import Notifier, child_env
from pylvs.service.paths import RuntimePaths

log = logging.getLogger("pylvs.pulse")

STATUS_INTERVAL = 1.0  # seconds between status-file writes
CHILD_RESPAWN_DELAY = 5.0  # a director that keeps dying is restarted at most this often
CHILD_STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this long
LINK_CHECK_INTERVAL = 0.2  # monitor_links: carrier is read at most this often
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
DIRECTOR_START_TIMEOUT = 300.0  # a cold numba cache compiles the engine for about a minute
STARTING_POLL = 0.2
# The control sockets are answered in the heartbeat loop: a client gets this long to send
# its request, and one client per socket is answered per pass, so a stalled client delays
# a heartbeat by a fraction of a second at most.
CONTROL_IO_TIMEOUT = 0.1
CONTROL_PER_PASS = 1


class PulseError(Exception):
    """pulse cannot start (the message says why)."""


def _die_with_parent() -> None:
    """preexec_fn: the director gets SIGTERM when pulse dies, and cleans up after itself."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _split_cmd(cmd: str) -> list[str]:
    return [part for part in cmd.split(" ") if part]  # pulse splits on single spaces, no shell


class Pulse:
    def __init__(self, path: str, *, forceactive: bool = False, io: str = "auto", status_path: str | None = None,
                 lvs_status: str | None = None, lvs_control: str | None = None, verbose: bool = False,
                 clock: Callable[[], float] = time.monotonic, workers: int = 1,
                 xdp_mode: str = "auto", busy_poll_us: int = 0, fail_closed: bool = False,
                 expire_nodest_conn: bool = False, expire_quiescent_template: bool = False,
                 defense: Any = None, metrics: str | None = None, runtime_dir: str | None = None,
                 logfile: str | None = None,
                 daemon: bool = False, control_path: str | None = None, web_control_path: str | None = None,
                 web_group: int | None = None, lvs_web_control: str | None = None) -> None:  # fmt: skip
        self.path = path
        self.forceactive = forceactive
        self.io = io
        self.workers = workers
        self.xdp_mode = xdp_mode
        self.busy_poll_us = busy_poll_us
        self.fail_closed = fail_closed
        self.expire_flags = [flag for flag, on in (("--expire-nodest-conn", expire_nodest_conn),
                                                   ("--expire-quiescent-template", expire_quiescent_template)) if on]
        self.expire_flags += defense.argv() if defense is not None else []  # handed on like the expire flags
        self.metrics = metrics
        self.runtime_dir = runtime_dir
        self.logfile = logfile
        self.daemon = daemon  # daemonized: the director's output goes to the log, not the terminal
        self.notifier = Notifier(env={})  # systemd and the daemonizing parent (pylvs.service.run sets it)
        self.lock: InstanceLock | None = None
        self.status_path = status_path
        self.lvs_status = lvs_status
        self.lvs_control = lvs_control
        self.control_path = control_path
        # --web-group: pulse's web socket and its director's (paths None: no web sockets)
        self.web_group = web_group
        self.web_control_path = web_control_path if web_group is not None else None
        self.lvs_web_control = lvs_web_control if web_group is not None else None
        self.controls: list[ControlSocket] = []
        self.last_reload: dict[str, Any] = {"ok": True, "time": time.time(), "error": None}
        self.verbose = verbose
        self.clock = clock
        self.config: Config | None = None
        self.node: nd.Node | None = None
        self.socks: list[tuple[socket.socket, str]] = []  # (socket, the peer address it sends to)
        self.peers: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.child: subprocess.Popen | None = None
        self.child_role = "starting"  # what the director last said on the notify pipe
        self.respawn_at = 0.0  # after a director died: not restarted before this
        self.child_exits = 0
        self.notify_r: int | None = None
        self.notify_buf = b""
        self.want_active = False
        self.arps_pending = False
        self.garp_stop = threading.Event()
        self.commands: list[subprocess.Popen] = []
        self.pending_signals: list[int] = []
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.exit_code: int | None = None
        self.confsync: Any = None
        self.confsync_thread: threading.Thread | None = None
        self.confsync_applied = threading.Event()
        self.stopping = threading.Event()
        self.links_ok = True
        self.next_link_check = 0.0
        self.last_heard: float | None = None  # the last valid heartbeat
        self.strangers: set[str] = set()  # sources of unexpected heartbeats, logged once each

    # -- configuration ------------------------------------------------------------------
    def _read(self) -> Config:
        try:
            config = load_for_daemon(self.path, log)
        except ValueError as exc:  # a FOS file
            raise PulseError(str(exc)) from None
        if not config.active_virtuals():
            raise PulseError(f"{self.path}: no active virtual server: nothing to fail over")
        return config

    # -- start ----------------------------------------------------------------------------
    def start(self) -> bool:
        """Sockets, director, start-up actions.  False when this node has nothing to do
        (a backup with backup_active = 0, as pulse exits there)."""
        config = self._read()
        self.lock = InstanceLock("pulse", {"config": self.path})
        self.lock.acquire()  # AlreadyRunning before any socket or child
        try:
            return self._start(config)
        except BaseException:
            self.stop()
            raise

    def _start(self, config: Config) -> bool:
        backup_active = config.backup_active and config.backup != ANY_ADDRESS
        if config.backup_active and not backup_active:
            log.warning("backup_active = 1 but no backup address: running without a backup")
        master = roles.is_master(config)
        if not master and not backup_active:
            log.info("this is the backup router and backup_active = 0: nothing to do")
            self.stop()
            return False
        self.config = config
        self._open_sockets(config, master)
        self._spawn_director()
        self._await_director()  # start() returns (and READY=1 goes out) once this router can take over
        self.node = nd.Node(master=master, keepalive=config.keepalive, deadtime=config.deadtime,
                            backup_active=backup_active, garp_refresh=config.garp_refresh)  # fmt: skip
        log.info("starting as %s router, heartbeat every %s s to %s, dead after %s s",
                 "primary" if master else "backup", config.keepalive, ", ".join(sorted(self.peers)) or "nobody",
                 config.deadtime)  # fmt: skip
        self._start_confsync(config, master)
        self._open_controls()
        if self._stop_requested():  # SIGTERM during start-up: no active_cmd, no ARP, no takeover
            return True  # the loop stops at once
        for step in self.node.start(self.clock(), self.forceactive):
            self._do(step)
        return True

    def _stop_requested(self) -> bool:
        return any(sig in self.pending_signals for sig in (signal.SIGTERM, signal.SIGINT))

    def _open_sockets(self, config: Config, master: bool) -> None:
        own_pub, own_priv = roles.own_addresses(config, master)
        peer_pub, peer_priv = roles.peer_addresses(config, master)
        pairs = [(own_pub, peer_pub)]
        if own_priv != own_pub:
            pairs.append((own_priv, peer_priv))
        for own, peer in pairs:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # close-on-exec by default
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((str(own), config.heartbeat_port))
            except OSError as exc:
                s.close()
                raise PulseError(f"cannot bind the heartbeat socket to {own}:{config.heartbeat_port}: {exc}") from exc
            s.setblocking(False)
            self.socks.append((s, str(peer)))
        self.peers = {str(peer_pub), str(peer_priv)}

    def _open_controls(self) -> None:
        """The control sockets, once there is a node to report on."""
        kw = {"io_timeout": CONTROL_IO_TIMEOUT}
        if self.control_path:
            self.controls.append(ControlSocket(self.control_path, **kw))
        if self.web_control_path:
            self.controls.append(ControlSocket(self.web_control_path, verbs=PULSE_WEB_VERBS, mode=WEB_MODE,
                                               group=self.web_group, **kw))  # fmt: skip

    def handle_control(self, req: dict) -> dict:
        """One control request, in the loop: fast work only (a status, a reload's check)."""
        cmd = req.get("cmd")
        if cmd == "status":
            return {"ok": True, "status": self.status()}
        if cmd == "reload":
            log.info("reload asked on the control socket")
            self._do(self.node.step(self.clock(), nd.SIG_HUP))
            return {"ok": self.last_reload["ok"], "error": self.last_reload["error"]}
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def _spawn_director(self) -> None:
        r, w = os.pipe()
        argv = [sys.executable, "-m", "pylvs", "lvs", "-c", self.path, "--nodaemon", "--standby",
                "--notify-fd", str(w), "--io", self.io, "--workers", str(self.workers),
                "--xdp-mode", self.xdp_mode, "--busy-poll", str(self.busy_poll_us)]  # fmt: skip
        for flag, value in (("--runtime-dir", self.runtime_dir), ("--metrics", self.metrics),
                            ("--logfile", self.logfile)):  # fmt: skip
            if value:
                argv += [flag, value]
        if self.fail_closed:
            argv.append("--fail-closed")
        argv += self.expire_flags
        if self.lvs_status:
            argv += ["--status", self.lvs_status]
        if self.lvs_control:
            argv += ["--control", self.lvs_control]
        if self.lvs_web_control:
            argv += ["--web-group", str(self.web_group), "--web-control", self.lvs_web_control]
        if self.verbose:
            argv.append("-v")
        out = subprocess.DEVNULL if self.daemon else None  # daemonized: pulse lets go of the terminal
        self.child = subprocess.Popen(argv, pass_fds=(w,), preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=out, env=child_env())  # fmt: skip
        os.close(w)
        if self.notify_r is not None:
            os.close(self.notify_r)
        self.notify_r, self.notify_buf = r, b""
        self.child_role = "starting"
        log.info("started the lvs director (pid %d), standby", self.child.pid)

    def _await_director(self) -> None:
        """Wait for the director's first word (standby), or its exit: a director that
        cannot start makes pulse's start fail with the reason, instead of a pulse that
        runs and can never take over."""
        deadline = self.clock() + DIRECTOR_START_TIMEOUT
        while self.child_role == "starting" and self.notify_r is not None:
            if self._stop_requested():
                return  # the loop handles it at once
            ready, _, _ = select.select([self.notify_r, self.wake_r], [], [], STARTING_POLL)
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            if self.notify_r in ready:
                self._read_notify()
            if self.child is not None and self.child.poll() is not None and self.child_role == "starting":
                raise PulseError(f"the lvs director exited during start-up with status {self.child.returncode}")
            if self.clock() > deadline:
                raise PulseError(f"the lvs director was not ready after {DIRECTOR_START_TIMEOUT:.0f} s")

    def _start_confsync(self, config: Config, master: bool) -> None:
        if not config.config_sync:
            return
        from pylvs.ha import confsync

        secret = confsync.read_secret(config.config_sync_secret)
        if master:
            own_pub, _ = roles.own_addresses(config, master)
            self.confsync = confsync.ConfigServer(self.path, secret, bind=(str(own_pub), config.config_sync_port))
            self.confsync.start()
            log.info("config sync: serving %s on %s:%d", self.path, own_pub, config.config_sync_port)
            return
        peer_pub, _ = roles.peer_addresses(config, master)
        self.confsync = confsync.ConfigSyncClient(self.path, str(peer_pub), config.config_sync_port, secret,
                                                  config.config_sync_interval)  # fmt: skip
        self.confsync_thread = threading.Thread(
            target=self.confsync.run, args=(self.stopping,), kwargs={"on_applied": self._on_confsync_applied},
            name="pulse-confsync", daemon=True)
        self.confsync_thread.start()

    def _on_confsync_applied(self, _outcome: Any) -> None:
        """From the config-sync thread: the loop reloads (SIGHUP's row of the table)."""
        self.confsync_applied.set()
        self._wake()

    # -- actions ------------------------------------------------------------------------
    def _do(self, step: nd.Step) -> None:
        if step.log:
            log.info("%s", step.log)
        for action in step.actions:
            self.counters[f"action_{action}"] += 1
            getattr(self, f"_{action}")()

    def _send(self, magic: int) -> None:
        data = hb.encode(magic)
        for s, peer in self.socks:
            try:
                s.sendto(data, (peer, self.config.heartbeat_port))
                self.counters["heartbeats_sent"] += 1
            except OSError as exc:  # an unreachable peer is what deadtime is for
                self.counters["send_errors"] += 1
                log.debug("heartbeat to %s: %s", peer, exc)

    def _send_running(self) -> None:
        self._send(hb.HEARTBEAT_RUNNING)

    def _send_stopped(self) -> None:
        self._send(hb.HEARTBEAT_STOPPED)

    def _run_cmd(self, cmd: str | None, what: str) -> None:
        if not cmd:
            return
        try:  # fire and forget, as pulse's fork + execv; reaped in the loop
            self.commands.append(subprocess.Popen(_split_cmd(cmd), stdin=subprocess.DEVNULL, start_new_session=True,
                                                  env=child_env()))
            log.info("running %s: %s", what, cmd)
        except OSError as exc:
            log.error("cannot run %s %r: %s", what, cmd, exc)

    def _run_active_cmd(self) -> None:
        self._run_cmd(self.config.active_cmd, "active_cmd")

    def _run_inactive_cmd(self) -> None:
        self._run_cmd(self.config.inactive_cmd, "inactive_cmd")

    def _signal_child(self, sig: int) -> None:
        if self.child is not None and self.child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(sig)

    def _lvs_active(self) -> None:
        self.want_active = True
        if self.child_role != "starting":  # before it is ready, the ready line triggers it
            self._signal_child(signal.SIGUSR1)

    def _lvs_standby(self) -> None:
        self.want_active = False
        self.arps_pending = False
        self.garp_stop.set()
        if self.child_role != "starting":
            self._signal_child(signal.SIGUSR2)

    def _send_arps(self) -> None:
        if self.child_role == "active":
            self._announce(self.config.garp_count)
        else:
            self.arps_pending = True  # sent when the director says the addresses are up

    def _refresh_arps(self) -> None:
        if self.child_role == "active":
            self._announce(1)

    def _announce(self, count: int) -> None:
        from pylvs.ha.garp import announce
        from pylvs.netctl import plan_for

        addresses = [(a.ip, a.dev) for a in plan_for(self.config).addresses]
        self.garp_stop = stop = threading.Event()
        interval = self.config.garp_interval
        kwargs = {"count": count, "interval": interval, "stop": stop}
        threading.Thread(target=announce, args=(addresses,), kwargs=kwargs, name="pulse-garp", daemon=True).start()

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            self._reload_config()
        finally:
            self.notifier.ready(self.summary())

    def _reload_config(self) -> None:
        try:
            config = self._read()
        except (dg.ConfigError, PulseError) as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.last_reload = {"ok": False, "time": time.time(), "error": f"reload refused: {exc}"}
            return
        if (config.primary, config.backup, config.heartbeat_port) != (self.config.primary, self.config.backup,
                                                                      self.config.heartbeat_port):  # fmt: skip
            log.warning("primary, backup or heartbeat_port changed: restart pulse for them to take effect")
        self.node.keepalive, self.node.deadtime = config.keepalive, config.deadtime
        self.node.garp_refresh = config.garp_refresh
        self.config = config
        self._signal_child(signal.SIGHUP)
        self.last_reload = {"ok": True, "time": time.time(), "error": None}
        log.info("reloaded %s", self.path)

    def _exit(self) -> None:
        self.exit_code = 0

    # -- the loop -------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.pending_signals.append(signum)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.wake_w, b"x")

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._on_signal)

    def run(self) -> int:
        try:
            return self._serve()
        finally:
            self.stop()

    def _serve(self) -> int:
        next_status = next_dog = self.clock()
        while self.exit_code is None:
            now = self.clock()
            self._maybe_respawn(now)
            self._check_links(now)
            if self.notifier.watchdog_usec and now >= next_dog:
                self.notifier.watchdog()  # the loop goes round: heartbeats are being handled
                next_dog = now + self.notifier.watchdog_interval
            timeout = max(0.0, min(self.node.next_deadline(), next_status, next_dog if self.notifier.watchdog_usec
                                   else float("inf"), self.next_link_check
                                   if self.config.monitor_links else float("inf")) - now)  # fmt: skip
            fds = [s for s, _ in self.socks] + [self.wake_r] + ([self.notify_r] if self.notify_r is not None else [])
            fds += self.controls
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except InterruptedError:
                ready = []
            now = self.clock()
            for s, _ in self.socks:
                if s in ready:
                    self._receive(s, now)
            if self.notify_r is not None and self.notify_r in ready:
                self._read_notify()
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
            for ctl in self.controls:
                if ctl in ready:
                    ctl.poll(self.handle_control, CONTROL_PER_PASS)
            self._handle_signals(now)
            if self.confsync_applied.is_set():
                self.confsync_applied.clear()
                log.info("config sync: a newer lvs.cf arrived; reloading")
                self._do(self.node.step(now, nd.SIG_HUP))
            self._check_child(now)
            for step in self.node.tick(self.clock()):
                self._do(step)
            self.commands = [c for c in self.commands if c.poll() is None]
            if self.status_path and now >= next_status:
                self.write_status()
                next_status = now + STATUS_INTERVAL
        return self.exit_code

    def _receive(self, s: socket.socket, now: float) -> None:
        while True:
            try:
                data, (src, _port) = s.recvfrom(hb.RECV_BUFFER)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                    log.debug("heartbeat socket: %s", exc)
                continue
            got = hb.decode(data, src, self.peers)
            if got.magic is None:
                self.counters[f"rejected_{got.reason}"] += 1
                # pulse logs a stranger at debug level; we say it once per source, so a
                # misconfigured third router is visible without flooding the log.
                first = got.reason == hb.UNEXPECTED_SOURCE and src not in self.strangers
                self.strangers.add(src)
                (log.warning if got.reason != hb.UNEXPECTED_SOURCE or first else log.debug)("%s", got.message)
                continue
            self.counters[f"received_{hb.MAGIC_NAMES[got.magic]}"] += 1
            self.last_heard = now
            self._do(self.node.heartbeat(now, got.magic))

    def _read_notify(self) -> None:
        try:
            chunk = os.read(self.notify_r, 4096)
        except OSError:
            chunk = b""
        if not chunk:  # the director closed its end: it is exiting; _check_child reaps it
            os.close(self.notify_r)
            self.notify_r = None
            return
        self.notify_buf += chunk
        while b"\n" in self.notify_buf:
            line, self.notify_buf = self.notify_buf.split(b"\n", 1)
            role = line.decode(errors="replace").strip()
            previous, self.child_role = self.child_role, role
            log.debug("director says %s", role)
            self._tell_systemd()
            if role == "standby" and previous == "starting" and self.want_active:
                self._signal_child(signal.SIGUSR1)
            elif role == "active" and not self.want_active:
                self._signal_child(signal.SIGUSR2)  # pulse changed its mind meanwhile
            elif role == "active" and self.arps_pending:
                self.arps_pending = False
                self._announce(self.config.garp_count)

    def _handle_signals(self, now: float) -> None:
        signals, self.pending_signals = self.pending_signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("%s received", signal.Signals(signum).name)
                self._do(self.node.step(now, nd.SIG_TERM))
            elif signum == signal.SIGHUP:
                self._do(self.node.step(now, nd.SIG_HUP))

    def _check_child(self, now: float) -> None:
        if self.child is None:
            return
        code = self.child.poll()
        if code is None or self.exit_code is not None:
            return
        self.child_exits += 1
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
        log.error("the lvs director (pid %d) exited with %s", self.child.pid, how)
        self.child = None
        self.child_role = "dead"
        self._do(self.node.step(now, nd.CHILD_EXIT))
        self.respawn_at = now + CHILD_RESPAWN_DELAY
        threading.Timer(CHILD_RESPAWN_DELAY, self._wake).start()

    def _maybe_respawn(self, now: float) -> None:
        if self.child is None and self.exit_code is None and now >= self.respawn_at:
            self._spawn_director()

    def _check_links(self, now: float) -> None:
        if not self.config.monitor_links or not self.node.backup_active or now < self.next_link_check:
            return
        self.next_link_check = now + LINK_CHECK_INTERVAL
        down = self._links_down()
        if down and self.links_ok:
            log.warning("carrier lost on %s", ", ".join(down))
            self.links_ok = False
            self._do(self.node.step(now, nd.LINK_DOWN))
        elif not down and not self.links_ok:
            self.links_ok = True
            self._do(self.node.step(now, nd.LINK_UP))

    def _links_down(self) -> list[str]:
        """The heartbeat NICs (owning our public and private addresses) that are not up
        with carrier (reference 2.7; IFF_UP and IFLA_CARRIER through netlink)."""
        from pyroute2 import IPRoute

        own = {str(a) for a in roles.own_addresses(self.config, self.node.master)}
        try:
            with IPRoute() as ipr:
                index = {a.get_attr("IFA_ADDRESS"): a["index"] for a in ipr.get_addr(family=2)}
                down = []
                for addr in sorted(own):
                    if addr not in index:
                        down.append(f"{addr} (address gone)")
                        continue
                    [link] = ipr.get_links(index[addr])
                    if not (link["flags"] & 1) or not link.get_attr("IFLA_CARRIER"):
                        down.append(link.get_attr("IFLA_IFNAME"))
                return down
        except OSError as exc:  # cannot tell: assume up, as piranha does when ioctls fail
            log.debug("link check: %s", exc)
            return []

    # -- status and stop --------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        n = self.node
        return {
            "pid": os.getpid(), "config": self.path, "role": "primary" if n.master else "backup",
            "state": "active" if n.active else "standby", "linkfail": n.linkfail, "childfail": n.childfail,
            "director": {"pid": self.child.pid if self.child else None, "role": self.child_role,
                         "exits": self.child_exits, "status": self._lvs_status_path(),
                         "web_control": self.lvs_web_control},
            "serial_no": self.config.serial_no if self.config else None,
            "keepalive": n.keepalive, "deadtime": n.deadtime, "peers": sorted(self.peers),
            "counters": dict(self.counters),
            "heard_ago": None if self.last_heard is None else round(self.clock() - self.last_heard, 3),
            "log": [s.log for s in n.history if s.log][-20:],
            "confsync": self._confsync_status(), "last_reload": self.last_reload,
        }  # fmt: skip

    def _lvs_status_path(self) -> str | None:
        """Where the director writes its status (`pylvs status` follows it)."""
        if self.lvs_status:
            return self.lvs_status
        return str(RuntimePaths.resolve(self.runtime_dir).status("lvs")) if self.runtime_dir else None

    def _confsync_status(self) -> dict[str, Any] | None:
        if self.confsync is None:
            return None
        if hasattr(self.confsync, "stats"):  # the primary's server
            return {"serving": True, **dataclasses.asdict(self.confsync.stats)}
        last = self.confsync.last
        return {"serving": False, "last": None if last is None else {"status": str(last.status), "reason": last.reason,
                                                                     "serial_no": last.serial_no}}  # fmt: skip

    def write_status(self) -> None:
        write_atomic(Path(self.status_path), json.dumps(self.status(), indent=1, sort_keys=True, default=str))

    def summary(self) -> str:
        """One line for systemd's STATUS=."""
        if self.node is None:
            return "starting"
        return (f"{'primary' if self.node.master else 'backup'}, {'active' if self.node.active else 'standby'}; "
                f"director {self.child_role}")

    def _tell_systemd(self) -> None:
        self.notifier.status(self.summary())

    def stop(self) -> None:
        self.stopping.set()
        self.notifier.stopping()
        self.garp_stop.set()
        if self.confsync is not None and hasattr(self.confsync, "stop"):
            self.confsync.stop()
        if self.child is not None and self.child.poll() is None:
            self.child.terminate()
            try:
                self.child.wait(CHILD_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.error("the lvs director did not stop in %.0f s: killing it", CHILD_STOP_TIMEOUT)
                self.child.kill()
                self.child.wait()
        for s, _ in self.socks:
            s.close()
        self.socks = []
        for ctl in self.controls:
            ctl.close()
        self.controls = []
        if self.status_path:
            Path(self.status_path).unlink(missing_ok=True)
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        log.info("stopped")


def read_status(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
