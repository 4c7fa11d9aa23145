"""Hitless takeover (issue 12): 20 graceful takeovers in a row, one keep-alive connection
held across all of them, and not one RST from either router.

Two routers run ``python -m pylvs pulse`` with connection sync on (keepalive 0.2 s,
deadtime 0.6 s).  client1 holds one HTTP keep-alive connection through the VIP and sends
a GET on it every few milliseconds for the whole run.  A takeover is the active router's
pulse stopped by SIGTERM (its director removes the VIP, then its rules, then stops its
reader; the peer hears nothing for deadtime and activates: reader, rules, VIP), then
started again, standby (no automatic failback), to be the one that takes over in the
next round.  So every round moves the service to the other router (checked in the pulse
status files), and the connection must answer 200 from the same real server through the
new router before the next round; the restarted router must hold the connection
(synced) before it is asked to take over.  Each handover must be graceful: the dying
director says its addresses and rules are removed, exits, and leaves no VIP behind.

TCP sends little while a takeover is under way (the held connection waits out its
retransmission timer), so during each takeover client1 also sends a SYN to the VIP every
millisecond from a raw socket (SynProbes): packets arrive at both routers all through
their deactivation and activation, and a router whose local stack gets one (the VIP up,
no reader behind the rules: the fail-open bypass) answers RST.

tcpdump in client1's namespace captures every TCP packet to or from the VIP, and every
RST, for the whole run.  It must have seen the held connection from before the first
takeover to after the last and the probes' answers (the positive control); no RST may
come to client1, and client1 may reset nothing but the probes' SYN-ACKs.  A connection
that breaks is counted against its round and replaced, and the run goes on, so the
report says how many of the 20 rounds survived and when, and from which host (by
source MAC), each RST came.  Cases: NAT and DR with pulse's defaults (fail-open, what an
operator gets), and DR with ``pulse --fail-closed``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import pytest

from pylvs.lab import topology as topo
from pylvs.lab.capture import Capture
from pylvs.lab.director import LabPulse
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import ipv4_tcp

ROUNDS = 20
KEEPALIVE, DEADTIME = 0.2, 0.6
FAST = (f"keepalive = {KEEPALIVE}\ndeadtime = {DEADTIME}\ngarp_count = 3\ngarp_interval = 0.3\n"
        "garp_refresh = 1\n")  # fmt: skip
SYNC = "syncdaemon = 1\nsyncd_iface = eth1\nsyncd_id = 7\n"
WAIT = 30.0  # bound on any one state change (never asserted as a timing)
PACE = 0.002  # seconds between two GETs on the held connection
GET_TIMEOUT = 10.0  # one GET may wait out a takeover (deadtime, then TCP's retransmission)
USES = 20  # GETs answered through the new router before a round counts as survived
PROBE_EVERY = 0.001  # seconds between two probe SYNs during a takeover
PROBE_PORTS = range(10000, 32000)  # below the ephemeral range: no socket of client1's
PROBE_BUDGET = len(PROBE_PORTS) // ROUNDS  # probes per round: no port is used twice in a run
PROBE_AFTER = 0.5  # probes go on this long after the new router is active and announced
RST = 0x04


REQUEST = f"GET / HTTP/1.1\r\nHost: {topo.VIP}\r\n\r\n".encode()


def get(sock: socket.socket) -> tuple[int, bytes]:
    """One GET on the keep-alive connection: (status, body).  The client ACKs at once
    (TCP_QUICKACK before each read): the lab server writes head and body separately, and
    a delayed ACK would hold the body back 40 ms, so the connection would carry few packets."""
    sock.sendall(REQUEST)
    data, need = b"", None
    while need is None or len(data) < need:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the keep-alive connection")
        data += chunk
        if need is None and b"\r\n\r\n" in data:
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            length = next(int(v) for k, _, v in (h.partition(":") for h in head.split("\r\n")[1:])
                          if k.strip().lower() == "content-length")  # fmt: skip
            need = len(head) + 4 + length
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class HeldConnection(threading.Thread):
    """GETs on one keep-alive connection from client1 to the VIP, every PACE s, until
    stopped.  Every answer must be 200 from the real server that answered the first.  A
    failure is recorded against the current round and a new connection opened, so later
    rounds are still judged (the report then says "N of 20")."""

    def __init__(self, lab) -> None:
        super().__init__(name="held-connection", daemon=True)
        self.lab = lab
        self.round = 0  # set by the test before each takeover
        self.answered = 0  # GETs answered 200 by the expected server
        self.failures: list[tuple[int, float, str]] = []  # (round, time.time(), what)
        self.ports: list[int] = []  # client ports of the connections opened
        self.halt = threading.Event()
        self.sock, self.server = self._connect()

    def _connect(self):
        sock = self.lab.socket("client1")
        sock.settimeout(GET_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((topo.VIP, topo.HTTP_PORT))
        self.ports.append(sock.getsockname()[1])
        status, body = get(sock)
        if status != 200:
            raise ConnectionError(f"first GET answered {status}")
        return sock, body

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                status, body = get(self.sock)
                if status != 200 or body != self.server:
                    raise ConnectionError(f"answered {status} {body!r}, expected 200 {self.server!r}")
                self.answered += 1
            except (OSError, ValueError, IndexError, StopIteration) as exc:  # ConnectionError is an OSError
                self.failures.append((self.round, time.time(), f"port {self.ports[-1]}: {type(exc).__name__}: {exc}"))
                self.sock.close()
                while not self.halt.is_set():  # a new connection, for the rounds still to come
                    try:
                        self.sock, self.server = self._connect()
                        break
                    except (OSError, ValueError, IndexError, StopIteration):
                        self.halt.wait(0.2)
            self.halt.wait(PACE)

    def stop(self) -> None:
        self.halt.set()
        self.join(GET_TIMEOUT + 5)

    def close(self) -> None:
        self.sock.close()


class SynProbes(threading.Thread):
    """After ``start_round()``, a SYN to VIP:80 every PROBE_EVERY s from client1 (raw
    socket), until ``end_round()`` or PROBE_BUDGET probes.  TCP sends little during a
    takeover (the held connection waits out its retransmission timer), so these keep
    packets arriving at both routers through their deactivation and activation.  A
    router that forwards a probe gets a SYN-ACK from a real server, which client1's kernel
    resets (a RST *from* the client, harmless); a router whose local stack gets it (the
    VIP up without a reader behind its rules) answers RST *to* the client: the bug.
    Every probe has its own source port (PROBE_PORTS, outside the ephemeral range): a
    real server may still hold a half-open connection from a probe whose RST a dying
    router lost, and would reset a second SYN on the same ports."""

    def __init__(self, lab) -> None:
        super().__init__(name="syn-probes", daemon=True)
        self.sock = lab.socket("client1", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.src = lab.hosts["client1"].ip()
        self.on, self.halt = threading.Event(), threading.Event()
        self.sent = 0  # the index of the next port
        self.total = 0  # probes sent
        self.limit = 0  # this round's last port index (exclusive)

    def start_round(self, rnd: int) -> None:
        self.sent, self.limit = (rnd - 1) * PROBE_BUDGET, rnd * PROBE_BUDGET
        self.on.set()

    def end_round(self) -> None:
        self.on.clear()

    def run(self) -> None:
        while not self.halt.is_set():
            if not self.on.wait(0.1) or self.sent >= self.limit:
                self.halt.wait(0.01)
                continue
            port = PROBE_PORTS[self.sent]
            with contextlib.suppress(OSError):
                self.sock.sendto(ipv4_tcp(self.src, topo.VIP, port, topo.HTTP_PORT, seq=port), (topo.VIP, 0))
                self.total += 1
            self.sent += 1
            time.sleep(PROBE_EVERY)

    def stop(self) -> None:
        self.halt.set()
        self.join(5.0)
        self.sock.close()


@pytest.fixture
def pulses(tmp_path):
    running: list[LabPulse] = []

    def start(lab, text: str | None, host: str, args: tuple[str, ...] = ()) -> LabPulse:
        p = LabPulse(lab, tmp_path, text or "", host=host, extra=args)
        running.append(p)
        return p

    yield start
    for p in running:
        p.stop()


def active(p: LabPulse) -> dict:
    return p.wait_for(lambda s: s["state"] == "active" and s["director"]["role"] == "active", WAIT, "active")


def standby(p: LabPulse) -> dict:
    return p.wait_for(lambda s: s["state"] == "standby" and s["director"]["role"] == "standby", WAIT, "standby")


def until(cond, timeout: float = WAIT, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := cond():
            return got
        time.sleep(step)
    return cond()


def neighbour_mac(lab, ip: str = topo.VIP) -> str | None:
    out = json.loads(lab.run("client1", ["ip", "-j", "neigh", "show", ip]).stdout or "[]")
    return out[0].get("lladdr") if out else None


def synced(p: LabPulse) -> int:
    """Connections in the standby director's table (it starts empty: only synced ones)."""
    try:
        return p.lvs_status()["connections"]
    except (OSError, ValueError, KeyError):
        return 0


def has_vip(lab, host: str) -> bool:
    out = lab.run(host, ["ip", "-j", "addr", "show"]).stdout
    return any(a.get("local") == topo.VIP for link in json.loads(out) for a in link.get("addr_info", []))


def hand_over(lab, p: LabPulse) -> str | None:
    """SIGTERM the active router's pulse and wait for it to end: None if the handover was
    graceful (its director removed its addresses and rules and stopped, exit 0, no VIP
    left behind), else what went wrong.  A director that does not stop is killed by
    pulse after 10 s and leaves its VIP and its fail-open rules behind."""
    mark = p.log_path.stat().st_size
    started = time.monotonic()
    code = p.stop()
    took = time.monotonic() - started
    text = p.log_path.read_bytes()[mark:].decode(errors="replace")
    problems = [f"exit {code}"] if code != 0 else []
    if "standby: addresses and rules removed" not in text:
        problems.append("its director never said 'standby: addresses and rules removed'")
    problems += [line.split(": ", 1)[-1] for line in text.splitlines() if "did not stop" in line]
    if has_vip(lab, p.host):
        problems.append(f"{topo.VIP} still on {p.host}")
    return f"{p.host} stopped in {took:.1f} s: " + "; ".join(problems) if problems else None


def resets(packets, lab, t0: float, takeovers, held_ports) -> list[str]:
    """The RSTs that count, one line each (time, round, source and whose MAC it came
    from): every RST *to* client1 (a router's local stack, or a real server, answering
    it), and client1's own RSTs on the held connection (it was broken).  client1's RSTs to
    the probes' SYN-ACKs are the probes working and are left out."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    client = lab.hosts["client1"].ip()
    owner = {i.mac: name for name, h in lab.hosts.items() for i in h.interfaces.values() if i.mac}
    lines = []
    for pkt in packets:
        if IP not in pkt or TCP not in pkt or not int(pkt[TCP].flags) & RST:
            continue
        ip, tcp = pkt[IP], pkt[TCP]
        if ip.src == client and tcp.sport not in held_ports:
            continue
        t = float(pkt.time)
        rnd, since = next(((r, t - at) for r, at, _ in reversed(takeovers) if at <= t), (0, t - t0))
        port = client_port(pkt, client)
        what = "held" if port in held_ports else "probe" if port in PROBE_PORTS else "other"
        mac = owner.get(pkt[Ether].src, pkt[Ether].src)
        lines.append(f"+{t - t0:7.3f} s  round {rnd:2} (+{since:.3f} s after the SIGTERM)  "
                     f"RST from {ip.src}:{tcp.sport} [{mac}] to {ip.dst}:{tcp.dport} ({what})")  # fmt: skip
    return lines


def client_port(pkt, client: str) -> int:
    from scapy.layers.inet import IP, TCP

    return pkt[TCP].sport if pkt[IP].src == client else pkt[TCP].dport


def director_argv(p: LabPulse) -> list[str]:
    pid = p.status()["director"]["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().decode().split("\0")


# The default (fail-open: what an operator gets) in both kinds, and pulse --fail-closed.
CASES = [("nat", ()), ("direct", ()), ("direct", ("--fail-closed",))]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("kind", "args"), CASES, ids=["nat", "direct", "direct-fail-closed"])
def test_takeovers_keep_the_connection_without_a_reset(make_lab, pulses, tmp_path, kind, args):
    lab = make_lab(kind, real_servers=3, directors=2)
    text = lvs_cf(lab, (Service(),), backup=True, extra_globals=FAST + SYNC)
    routers = [pulses(lab, text, "dir1", args), pulses(lab, text, "dir2", args)]
    active(routers[0])
    standby(routers[1])
    for p in routers:  # pulse hands its --fail-closed (or nothing) to its director
        assert ("--fail-closed" in director_argv(p)) == ("--fail-closed" in args)
    router_macs = {h: lab.hosts[h].iface(topo.PUBLIC).mac for h in ("dir1", "dir2")}
    # Everything to or from the VIP (the positive control), and any RST at all.
    cap = Capture(lab, "client1", tmp_path / "takeover.pcap",
                  f"tcp and (host {topo.VIP} or tcp[tcpflags] & tcp-rst != 0)")  # fmt: skip
    held = probes = None
    unclean: list[tuple[int, str]] = []  # (round, what went wrong in the dying router's handover)
    takeovers: list[tuple[int, float, str]] = []  # (round, time.time() of the SIGTERM, "dir1 -> dir2")
    t0 = time.time()
    try:
        cap.start()
        held = HeldConnection(lab)
        held.start()
        probes = SynProbes(lab)
        probes.start()
        assert until(lambda: neighbour_mac(lab) == router_macs["dir1"]), neighbour_mac(lab)
        cap.wait_packets(10, WAIT)  # the capture sees the connection before the first takeover
        now = 0  # index of the active router
        for rnd in range(1, ROUNDS + 1):
            old, new = routers[now], routers[1 - now]
            assert until(lambda new=new: synced(new) >= 1), f"round {rnd}: the connection never reached {new.host}"
            held.round = rnd
            probes.start_round(rnd)
            takeovers.append((rnd, time.time(), f"{old.host} -> {new.host}"))
            if problem := hand_over(lab, old):  # SIGTERM: a graceful handover
                unclean.append((rnd, problem))
            active(new)
            assert until(lambda new=new: neighbour_mac(lab) == router_macs[new.host]), neighbour_mac(lab)
            time.sleep(PROBE_AFTER)
            probes.end_round()
            answered = held.answered
            assert until(lambda a=answered: held.answered >= a + USES or not held.is_alive()), (
                f"round {rnd}: the connection stalled through {new.host}"
            )
            routers[now] = pulses(lab, None, old.host, args)  # back, standby: the next round's target
            standby(routers[now])
            assert new.status()["state"] == "active"  # no failback
            now = 1 - now
        time.sleep(0.2)  # the last answers reach the capture
    finally:
        for thread in (probes, held):
            if thread is not None:
                thread.stop()
        summary = cap.stop()
        if held is not None:
            held.close()
    packets = cap.packets()
    reset_lines = resets(packets, lab, t0, takeovers, set(held.ports))
    broken = sorted({r for r, _, _ in held.failures})
    tail = summary.splitlines()[-1] if summary else "no summary"
    label = " ".join((kind, *args))
    print(f"\n{label}: {ROUNDS - len(broken)} of {ROUNDS} takeovers survived, {held.answered} GETs answered, "
          f"{probes.total} probe SYNs, {len(packets)} packets captured ({tail}), "
          f"{len(reset_lines)} RST(s) that count")  # fmt: skip
    for line in reset_lines:
        print(line)
    for rnd, t, what in held.failures:
        print(f"+{t - t0:7.3f} s  round {rnd:2}: {what}")
    for rnd, what in unclean:
        print(f"round {rnd:2}: not a graceful handover: {what}")
    # The positive control: the capture saw the held connection both ways, from before the
    # first takeover to after the last, and the probes' SYN-ACKs.
    from scapy.layers.inet import IP, TCP

    client = lab.hosts["client1"].ip()
    conn = [p for p in packets if TCP in p and client_port(p, client) in held.ports]
    assert {p[IP].src for p in conn} >= {client, topo.VIP}, "the capture missed the connection"
    assert float(conn[0].time) < takeovers[0][1] < takeovers[-1][1] < float(conn[-1].time), "not the whole run"
    answered = {p[TCP].dport for p in packets if TCP in p and int(p[TCP].flags) & 0x12 == 0x12
                and p[TCP].dport in PROBE_PORTS}  # fmt: skip
    assert len(answered) >= probes.total // 4, f"{len(answered)} of {probes.total} probes answered: none got through"
    assert cap.dropped == 0, summary
    assert not held.failures and not reset_lines, (
        f"{label}: {len(broken)} of {ROUNDS} takeovers broke the connection (rounds {broken}); "
        f"RSTs:\n" + "\n".join(reset_lines))  # fmt: skip
    assert not unclean, f"{label}: {len(unclean)} of {ROUNDS} handovers were not graceful: {unclean}"
