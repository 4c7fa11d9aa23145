"""The capture around real traffic (``tests/data/kernel-ipvs/ipvsadm-traffic.jsonl``,
ipvsadm 1.31 on kernel 6.1) replayed against a bare ``pylvs lvs`` on the capture's own
topology (``vm/topo.sh``), rebuilt in namespaces created here:

    cl (10.0.0.1..7/24) -- d-cl [director: 10.0.0.254, VIPs 10.0.0.100..104/32]
                           br-rs 10.0.1.254/24 -- rs1..rs3 (10.0.1.K/24, name_server.py)

The same commands, the same connections from the same client addresses, the same
listings through pylvsadm.  Compared as the case allows:

* the commands and ``-L -n -c -t`` (a parse error): stdout, stderr and exit code, exactly;
* every connection is answered by the server that answered it on the kernel (the
  schedulers and persistence decide as the kernel's);
* ``-L -n``, ``--persistent-conn``, ``--thresholds`` and the stats after ``-Z``: exactly;
  ``--nosort``: the same blocks (the kernel's hash order needs a kernel pointer);
* ``--stats``: the layout and every Conns exactly; packets and bytes are zero exactly
  where the kernel's are, and each service's numbers are the sum of its servers';
* ``--rate``: the layout exactly; a server that never had a connection rates 0;
* ``-L -c``: the header exactly; the entries of this run's services (the capture also
  holds older entries of other tests) as the same multiset of protocol, state, client
  address, virtual and destination (client ports are the kernels' own choice), each
  expiring within the state's timeout and at most ``EXPIRY_SLACK`` s before it;
* ``/proc/net/ip_vs*`` and ``sysctl net.ipv4.vs``: pylvs has neither (docs/ipvsadm.md).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ipvsadm_golden import CAPACITY, GOLDEN, blocks

from pylvs.lab import netns

HERE = Path(__file__).parent
TRAFFIC = GOLDEN.with_name("ipvsadm-traffic.jsonl")
START_TIMEOUT = 180.0
SERVER_LIFETIME = 600  # seconds: name_server.py ends by itself
CLIENTS = 7  # 10.0.0.1 .. 10.0.0.7, the capture's client addresses
SERVERS = 3  # rs1 .. rs3 (the capture's topology has 5; its services use 3)
CONNECT_TIMEOUT = 3.0
EXACT = {"L-n", "L-n-persistent-conn", "L-n-thresholds", "L-n-stats-after-Z", "L-n-one-svc-c"}
NOSORT = {"L-n-nosort"}
STATS = {"L-n-stats", "L-n-stats-exact", "L-n-stats-2", "L-n-stats-after-Z-one"}
RATES = {"L-n-rate", "L-n-rate-exact"}
CONNS = {"L-n-c", "L-n-c-persistent-conn", "L-c", "L-n-c-exact", "L-n-c-final"}
# The virtuals of this capture's services (-L -c without -n names the ports it can).
OUR_VIRTUALS = (("10.0.0.100", 3000), ("10.0.0.101", 3001), ("10.0.0.102", 3002), ("10.0.0.103", 3003),
                ("10.0.0.104", 0), ("10.0.0.104", 80))  # fmt: skip


def _port_names(port: int) -> set[str]:
    names = {str(port)}
    for proto in ("tcp", "udp"):
        with contextlib.suppress(OSError):
            names.add(socket.getservbyport(port, proto))
    return names


OURS = {f"{vip}:{name}" for vip, port in OUR_VIRTUALS for name in _port_names(port)}
# ipvsadm.c print_conn: "%-3s %02d:%02d  %-11s %-18s %-18s %-18s"
CONN = re.compile(r"^(\S+) +(\d\d):(\d\d)  (\S+) +(\S+) +(\S+) +(\S+)")
STATE_TIMEOUT = {"TIME_WAIT": 120, "ESTABLISHED": 900, "UDP": 300, "CLOSE": 10, "FIN_WAIT": 120}
PERSISTENCE = {"10.0.0.100": 60, "10.0.0.101": 120, "10.0.0.104": 30}  # the services' -p
EXPIRY_SLACK = 60.0  # a bound on how long this test runs between a connection and its listing
STAT_LINE = re.compile(r"^(.{33}|  -> .{28})((?: *\d+[KMGT]?){5})$")


def records() -> list[dict]:
    return [json.loads(line) for line in TRAFFIC.read_text().splitlines() if line.strip()]


class Topology:
    """The capture's namespaces and processes; ``close`` removes them all."""

    def __init__(self, tmp: Path) -> None:
        tag = os.urandom(3).hex()
        self.ns = {role: f"plgt{tag}{role}" for role in ("dir", "cl", "q", *(f"rs{k}" for k in range(1, 4)))}
        self.procs: list[subprocess.Popen] = []
        self.tmp = tmp
        self.control = tmp / "lvs.ctl"

    def build(self) -> None:
        n = self.ns
        for name in n.values():
            netns.add_netns(name)
            netns.ip(name, "link", "set", "lo", "up")
        d = n["dir"]
        netns.sysctl(d, {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.rp_filter": 0,
                         "net.ipv4.conf.default.rp_filter": 0})  # fmt: skip
        netns.veth(d, "d-cl", n["cl"], "eth0")
        lines = ["addr add 10.0.0.254/24 dev d-cl", "link set d-cl up"]
        lines += [f"addr add 10.0.0.{j}/32 dev d-cl" for j in range(100, 105)]
        lines += ["link add br-rs type bridge", "addr add 10.0.1.254/24 dev br-rs", "link set br-rs up"]
        netns.ip_batch(d, lines)
        addrs = [f"addr add 10.0.0.{j}/24 dev eth0" for j in range(1, CLIENTS + 1)]
        netns.ip_batch(n["cl"], ["link set eth0 up", *addrs, "route add default via 10.0.0.254"])
        for k in range(1, SERVERS + 1):
            rs = n[f"rs{k}"]
            netns.veth(d, f"d-rs{k}", rs, "eth0")
            netns.ip_batch(d, [f"link set d-rs{k} master br-rs", f"link set d-rs{k} up"])
            netns.ip_batch(rs, [f"addr add 10.0.1.{k}/24 dev eth0", "link set eth0 up",
                                "route add default via 10.0.1.254"])  # fmt: skip
            self.start(rs, [sys.executable, str(HERE / "name_server.py"), f"rs{k}", "80", str(SERVER_LIFETIME)],
                       f"rs{k}.log", ready="ready")  # fmt: skip
        status = self.tmp / "lvs.status.json"
        self.start(d, [sys.executable, "-m", "pylvs", "lvs", "--bare", "--nodaemon", "--io", "nfq-loop",
                       "--runtime-dir", str(self.tmp), "--status", str(status), "--control", str(self.control),
                       "--capacity", str(CAPACITY)], "lvs.log")  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not status.exists():
            if self.procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pylvs lvs --bare did not start:\n{(self.tmp / 'lvs.log').read_text()}")
            time.sleep(0.1)

    def start(self, ns: str, argv: list[str], log: str, ready: str | None = None) -> None:
        with open(self.tmp / log, "wb") as f:
            p = subprocess.Popen(netns.exec_argv(ns, argv), stdout=f if ready is None else subprocess.PIPE,
                                 stderr=f, stdin=subprocess.DEVNULL, preexec_fn=netns.die_with_parent)  # fmt: skip
        self.procs.append(p)
        if ready is not None:
            assert p.stdout.readline().decode().strip() == ready, f"{argv} did not start"

    def pylvsadm(self, cases: list[tuple[str, str]]) -> dict[str, dict]:
        """The cases through pylvsadm, in the namespace that has only lo (no lookup leaves)."""
        src, out = self.tmp / "cases.json", self.tmp / "results.json"
        src.write_text(json.dumps(cases))
        argv = [sys.executable, str(HERE / "ipvsadm_replay.py"), str(self.control), str(out), str(src)]
        proc = subprocess.run(netns.exec_argv(self.ns["q"], argv), capture_output=True, text=True, timeout=120,
                              check=False)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return {r["id"]: r for r in json.loads(out.read_text())}

    def close(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if p.stdout is not None:
                p.stdout.close()
        for name in self.ns.values():
            if netns.netns_exists(name):
                netns.del_netns(name)


class Client:
    """The capture's client: connections from a chosen source address, some held open."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.held: list[socket.socket] = []

    def tcp(self, src: str, dst: str, port: int, hold: bool) -> str:
        s = netns.socket_in(self.ns)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.bind((src, 0))
            s.connect((dst, port))
            answer = s.recv(64).decode().strip()
        except OSError as exc:
            answer = f"error {exc}"
        if hold:
            self.held.append(s)
        else:
            s.close()
        return answer

    def udp(self, src: str, dst: str, port: int, n: int) -> None:
        u = netns.socket_in(self.ns, type=socket.SOCK_DGRAM)
        u.bind((src, 0))
        for _ in range(n):
            u.sendto(b"ping\n", (dst, port))
        u.close()

    def close(self) -> None:
        for s in self.held:
            s.close()


def run_capture(topo: Topology) -> tuple[dict[str, dict], dict[str, str]]:
    """Replay the capture in its order: pylvsadm cases in runs, the traffic between."""
    client = Client(topo.ns["cl"])
    results: dict[str, dict] = {}
    answers: dict[str, str] = {}
    pending: list[tuple[str, str]] = []
    try:
        for r in records():
            if r.get("kind"):
                results.update(topo.pylvsadm(pending) if pending else {})
                pending = []
                m = re.match(r"(tcp|udp) (\S+?)(?::\d+)? -> (\S+):(\d+)(?: x(\d+))?( \(held\))?$", r["cmd"])
                proto, src, dst, port, n, held = m.groups()
                if proto == "tcp":
                    answers[r["id"]] = client.tcp(src, dst, int(port), bool(held))
                else:
                    client.udp(src, dst, int(port), int(n))
                continue
            if not r["cmd"].startswith("ipvsadm"):  # /proc/net/ip_vs* and net.ipv4.vs.*: pylvs has neither
                continue
            if r["id"] in ("L-n-rate", "L-n-stats-2"):  # the capture waited for the estimator here
                results.update(topo.pylvsadm(pending) if pending else {})
                pending = []
                time.sleep(2.5)
            pending.append((r["id"], r["cmd"]))
        results.update(topo.pylvsadm(pending) if pending else {})
    finally:
        client.close()
    return results, answers


def numbers(text: str) -> dict[tuple[str, str], list[int]]:
    """A --stats/--rate listing as {(service line, its own line): the five numbers}."""
    out = {}
    service = ""
    for line in text.splitlines()[3:]:
        m = STAT_LINE.match(line)
        assert m, f"not a --stats/--rate line: {line!r}"
        values = []
        for v in m[2].split():
            scale = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}.get(v[-1], 1)
            values.append(int(v.rstrip("KMGT")) * scale)
        if not line.startswith("  ->"):
            service = m[1]
        out[(service, m[1])] = values
    return out


def stats_differ(got: str, want: str) -> list[str]:
    g, w = numbers(got), numbers(want)
    if got.splitlines()[:3] != want.splitlines()[:3] or list(g) != list(w):
        return ["layout differs"]
    bad = []
    for (service, name), values in g.items():
        want_values = w[(service, name)]
        if values[0] != want_values[0]:
            bad.append(f"{name.strip()}: Conns {values[0]}, the kernel {want_values[0]}")
        if [v == 0 for v in values] != [v == 0 for v in want_values]:
            bad.append(f"{name.strip()}: zero where the kernel's is not (or the reverse): {values} / {want_values}")
        if service == name:
            rows = [v for (s, n), v in g.items() if s == service and n != service]
            total = [sum(col) for col in zip(*rows, strict=True)]
            if total and total != values:
                bad.append(f"{name.strip()}: {values} is not the sum of its servers {total}")
    return bad


def rates_differ(got: str, want: str, stats: str) -> list[str]:
    """Layout exact; a server that never had a connection (Conns 0 in --stats) rates 0."""
    g = numbers(got)
    if got.splitlines()[:3] != want.splitlines()[:3] or list(g) != list(numbers(want)):
        return ["layout differs"]
    idle = {key for key, v in numbers(stats).items() if v[0] == 0}
    return [f"{name.strip()} never had a connection but rates {v}" for (s, name), v in g.items()
            if (s, name) in idle and any(v)]  # fmt: skip


def conn_entries(text: str, *, ours_only: bool) -> tuple[list[str], collections.Counter, list[tuple]]:
    lines = text.splitlines()
    entries: collections.Counter = collections.Counter()
    expiries = []
    for line in lines[2:]:
        m = CONN.match(line)
        assert m, f"not a -L -c line: {line!r}"
        proto, mm, ss, state, src, virtual, dest = m.groups()
        if ours_only and virtual not in OURS:
            continue
        caddr, cport = src.rsplit(":", 1)
        entries[(proto, state, caddr if cport != "0" else src, virtual, dest)] += 1
        expiries.append((state, virtual, int(mm) * 60 + int(ss)))
    return lines[:2], entries, expiries


def conns_differ(got: str, want: str) -> list[str]:
    g_head, g, g_exp = conn_entries(got, ours_only=False)
    w_head, w, _ = conn_entries(want, ours_only=True)
    bad = []
    if g_head != w_head:
        bad.append(f"header {g_head} != {w_head}")
    if g != w:
        bad.append(f"entries differ: only ours {dict(g - w)}, only the kernel's {dict(w - g)}")
    for state, virtual, left in g_exp:
        full = PERSISTENCE[virtual.rsplit(":", 1)[0]] if state == "ASSURED" else STATE_TIMEOUT[state]
        if not full - EXPIRY_SLACK <= left <= full:
            bad.append(f"{state} {virtual}: expires in {left} s, the state's timeout is {full} s")
    return bad


@pytest.fixture
def topology(netns_support, tmp_path):
    topo = Topology(tmp_path)
    try:
        topo.build()
        yield topo
    finally:
        topo.close()


def test_the_capture_around_real_traffic(topology):
    results, answers = run_capture(topology)
    bad = []
    for r in records():
        if r.get("kind") == "traffic" and r["cmd"].startswith("tcp"):
            if answers[r["id"]] != r["stdout"].strip():
                bad.append(f"[{r['id']}] {r['cmd']}: answered by {answers[r['id']]}, on the kernel by "
                           f"{r['stdout'].strip()}")  # fmt: skip
            continue
        if r.get("kind") or not r["cmd"].startswith("ipvsadm"):  # /proc files and sysctls: not pylvs's
            continue
        g = results[r["id"]]  # every other case ran (a KeyError says which did not)
        if (g["stderr"], g["rc"]) != (r["stderr"], r["rc"]):
            bad.append(f"[{r['id']}] {r['cmd']}: rc {g['rc']} {g['stderr']!r}, the kernel's {r['rc']} {r['stderr']!r}")
            continue
        if r["id"] in STATS:
            problems = stats_differ(g["stdout"], r["stdout"])
        elif r["id"] in RATES:
            problems = rates_differ(g["stdout"], r["stdout"], results["L-n-stats-2"]["stdout"])
        elif r["id"] in CONNS:
            problems = conns_differ(g["stdout"], r["stdout"])
        elif r["id"] in NOSORT:
            problems = [] if blocks(g["stdout"]) == blocks(r["stdout"]) else ["blocks differ"]
        else:
            problems = [] if g["stdout"] == r["stdout"] else ["stdout differs"]
        if problems:
            bad.append(f"[{r['id']}] {r['cmd']}: " + "; ".join(problems) +
                       f"\n--- ours\n{g['stdout'][:3000]}--- the kernel's\n{r['stdout'][:3000]}")  # fmt: skip
    assert not bad, f"{len(bad)} case(s) differ:\n\n" + "\n".join(bad)
