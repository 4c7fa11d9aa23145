"""The connection sync daemon: ``ipvsadm --start-daemon master|backup`` in userspace.

Reference 10 and 2.8; the kernel's ``ip_vs_sync.c`` (``sync_thread_master``,
``sync_thread_backup``, ``make_send_sock``, ``make_receive_sock``).  The master reads
the entries due for sync from a Forwarder (``fwd.sync_collect``) every ``interval``
seconds, encodes them as version 1 messages (``pylvs.ha.sync``) and sends them to the
multicast group (TTL 1, no loopback, out of the interface with ``iface_addr``) or to one
unicast peer.  The backup receives, decodes, drops messages of another syncid (only
when its own syncid is not 0, as the kernel) and applies the records
(``fwd.sync_apply``).  One object runs one role at a time; starting a role stops the
other.  Threads wake at least every POLL seconds to see ``stop``; a bad datagram is
counted, never fatal.

Sockets come from ``make_socket(family, type)`` (default ``socket.socket``), so tests
can hand in sockets made inside a lab namespace; memberships are given by interface
*address* (``struct ip_mreq``), which the socket's own namespace resolves.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pylvs.ha import sync

log = logging.getLogger(__name__)

POLL = 0.2  # seconds: the longest a thread goes without looking at its stop event
RECV_BUFFER = 65535  # the largest UDP datagram
MASTER, BACKUP = "master", "backup"


def iface_address(name: str) -> str:
    """The first IPv4 address of device ``name`` in the current namespace (pyroute2)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=name)
        if not links:
            raise ValueError(f"no network device {name!r} in this namespace")
        for msg in ipr.get_addr(family=socket.AF_INET, index=links[0]):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                return addr
    raise ValueError(f"device {name!r} has no IPv4 address")


class SyncDaemon:
    def __init__(self, fwd: Any, *, syncid: int, port: int = sync.SYNC_PORT, group: str = sync.SYNC_MCAST_GROUP,
                 iface_addr: str, unicast_peer: str | None = None,
                 make_socket: Callable[[int, int], socket.socket] | None = None,
                 interval: float = 0.2, clock: Callable[[], float] = time.monotonic,
                 max_size: int = sync.SYNC_MESG_MAX, ttl: int = sync.SYNC_TTL) -> None:  # fmt: skip
        if not 0 <= syncid <= 255:
            raise ValueError(f"syncid must be 0..255, got {syncid}")
        self.fwd = fwd
        self.syncid = syncid
        self.port = port
        self.group = group
        self.iface_addr = iface_addr
        self.unicast_peer = unicast_peer
        self.make_socket = make_socket or socket.socket
        self.interval = interval
        self.clock = clock
        self.max_size = max_size
        self.ttl = ttl  # multicast TTL (ipvsadm --mcast-ttl)
        self.role: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._times: dict[str, float] = {}  # last_sent / last_received, on ``clock``

    # -- control ----------------------------------------------------------------------------
    def start_master(self) -> None:
        self._start(MASTER, self._master_socket(), self._run_master)

    def start_backup(self) -> None:
        self._start(BACKUP, self._backup_socket(), self._run_backup)

    def stop(self) -> None:
        """Stop whichever role runs (waits for its thread)."""
        t = self._thread
        self._stop.set()
        if t is not None:
            t.join()
        self._thread = None
        self.role = None

    def stats(self) -> dict[str, Any]:
        """Counters: messages/conns sent and received, drops by reason (``drop_<problem>``,
        ``wrong_syncid``, ``recv_error``, ``send_error``), applied outcomes (``apply_<name>``),
        ``last_sent``/``last_received`` (on ``clock``) and ``role``."""
        with self._lock:
            out: dict[str, Any] = dict(self._stats)
            out.update(self._times)
        out["role"] = self.role
        return out

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            with self._lock:
                self._stats[name] += n

    def _last(self, name: str) -> None:
        with self._lock:
            self._times[name] = self.clock()

    def _start(self, role: str, sock: socket.socket, target: Callable[[socket.socket, threading.Event], None]) -> None:
        self.stop()
        stop = threading.Event()
        self._stop = stop
        self.role = role
        self._thread = threading.Thread(target=target, args=(sock, stop), name=f"syncd-{role}", daemon=True)
        self._thread.start()

    # -- sockets ----------------------------------------------------------------------------
    def _master_socket(self) -> socket.socket:
        s = self.make_socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if self.unicast_peer is None:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.iface_addr))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, self.ttl)
                s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.bind((self.iface_addr, 0))  # the kernel binds its send socket to the interface address
        except OSError:
            s.close()
            raise
        return s

    def _backup_socket(self) -> socket.socket:
        s = self.make_socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.unicast_peer is None:
                s.bind((self.group, self.port))  # only the group's datagrams (make_receive_sock)
                mreq = struct.pack("4s4s", socket.inet_aton(self.group), socket.inet_aton(self.iface_addr))
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            else:
                s.bind((self.iface_addr, self.port))
            s.settimeout(POLL)
        except OSError:
            s.close()
            raise
        return s

    # -- threads ----------------------------------------------------------------------------
    def _run_master(self, sock: socket.socket, stop: threading.Event) -> None:
        dest = (self.unicast_peer or self.group, self.port)
        try:
            while not stop.is_set():
                self.send_once(sock, dest)
                stop.wait(min(self.interval, POLL))
        finally:
            sock.close()

    def send_once(self, sock: socket.socket, dest: tuple[str, int]) -> int:
        """One master round: collect, encode, send; returns the records sent."""
        try:
            records = self.fwd.sync_collect()  # the forwarder's own clock: its entries' time base
        except Exception:  # noqa: BLE001 - the daemon outlives a failing round; counted and logged
            log.exception("sync master: collecting failed")
            self._count("collect_error")
            return 0
        if records.shape[0] == 0:
            return 0
        for msg in sync.encode_v1(self.syncid, records, self.max_size):
            try:
                sock.sendto(msg, dest)
                self._count("messages_sent")
            except OSError as exc:
                log.warning("sync master: send to %s:%d failed: %s", dest[0], dest[1], exc)
                self._count("send_error")
        self._count("conns_sent", int(records.shape[0]))
        self._last("last_sent")
        return int(records.shape[0])

    def _run_backup(self, sock: socket.socket, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    data, _ = sock.recvfrom(RECV_BUFFER)
                except TimeoutError:
                    continue
                except OSError as exc:
                    log.warning("sync backup: receive failed: %s", exc)
                    self._count("recv_error")
                    stop.wait(POLL)
                    continue
                self.receive(data)
        finally:
            sock.close()

    def receive(self, data: bytes) -> dict[str, int] | None:
        """Handle one datagram as the backup does; returns the apply counts or None."""
        self._count("messages_received")
        d = sync.decode(data)
        if self.syncid != 0 and d.syncid >= 0 and d.syncid != self.syncid:
            self._count("wrong_syncid")  # ip_vs_process_message: "Ignoring syncid"
            return None
        for name, n in d.problems.items():
            self._count(f"drop_{name}", n)
        if d.conns.shape[0] == 0:
            return None
        self._count("conns_received", int(d.conns.shape[0]))
        try:
            counts = self.fwd.sync_apply(d.conns)
        except Exception:  # noqa: BLE001 - never die on one message; counted and logged
            log.exception("sync backup: applying failed")
            self._count("apply_error")
            return None
        for name, n in counts.items():
            self._count(f"apply_{name}", n)
        self._last("last_received")
        return counts
