"""The orchestrator: labs, services, configurations A..DRX, measurements, teardown.

Follows ../shared/lab/anchors.sh (the reference harness), on pylvs.lab topologies:
every configuration is brought up, checked (the target answers HTTP), measured with
each metric and taken down again, in the same order in every run.  Everything started
here is ended by PID (pylvs.lab.netns.end_process: SIGTERM, then SIGKILL), every load
generator runs under `timeout`, and the labs are destroyed in a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.forward import confgen, parsers
from bench.forward.cli import Options
from bench.forward.summary import DR_CONFIGS, REFERENCE, Sample, render
from pylvs.config import check_text
from pylvs.lab import Lab, build_lab, netns
from pylvs.lab.topology import PRIVATE, PUBLIC, SEGMENT_NETS, Host

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SRC = HERE / "src"

GEN_SLACK = 15  # s a generator may overrun its duration before `timeout` ends it (anchors.sh)
STOP_GRACE = 10.0  # s between SIGTERM and SIGKILL for a forwarder (pylvs removes its rules first)
SETTLE = 1.0  # s between measurements and configurations (anchors.sh: sleep 1)
SERVICE_READY = 15.0  # s for nginx on every real server to answer
UDP_PAYLOAD, UDP_SOCKETS, UDP_BATCH = 64, 8, 64  # anchors.sh: udp_blast ... 64 8 64
SINK_LEAD = 0.5  # s the sinks listen before the blast starts
SINK_TAIL = 3  # s the sinks outlive the blast (late packets still count)
PROBE_TIMEOUT = 1.0  # s for one readiness HTTP GET
IPERF_IDLE = 30  # s: iperf3 -s restarts a stuck server after this much idleness
# anchors.sh's per-namespace settings: many short connections from one client address
LOAD_SYSCTLS = {
    "net.ipv4.tcp_tw_reuse": 1,
    "net.ipv4.ip_local_port_range": "1024 65000",
    "net.core.somaxconn": 8192,
    "net.ipv4.tcp_max_syn_backlog": 8192,
}
NAT_CONFIGS = ("A", "B", "C", "D1", "D2", "D3", "D3W", "D3F", "D4", "D4B")
# Measured on a NAT lab of their own whose director interfaces have two receive queues
# (one per AF_XDP worker); the rest of that lab is the `nat` lab's.
QUEUED_CONFIGS = ("D4W",)
PYLVS_IO = {"D1": ("nfqueue",), "D2": ("nfq-native",), "D3": ("nfq-loop",), "D3W": ("nfq-loop", "--workers", "2"),
            "D3F": ("nfq-loop",),
            "D4": ("afxdp",), "D4B": ("afxdp", "--busy-poll", "200"), "D4W": ("afxdp", "--workers", "2"),
            "DR": ("afpacket",), "DRL": ("nfq-loop",),
            "DRX": ("afxdp",), "DRXB": ("afxdp", "--busy-poll", "200")}  # `pylvs lvs --io ...`
REQUIRED_TOOLS = ("wrk", "iperf3", "nginx", "cc", "timeout", "nft")
# nft ruleset lines that are structure, not rules (leftover check after pylvs stops)
_NFT_STRUCTURE = ("table ", "chain ", "}", "type ", "policy ", "flags ")


def lab_key(cfg: str) -> str:
    """Which lab a configuration runs on: `direct`, `nat`, or `nat2q` (two receive queues)."""
    return "direct" if cfg in DR_CONFIGS else "nat2q" if cfg in QUEUED_CONFIGS else "nat"


Fwd = tuple  # (% of one core, of which system) of the forwarding process tree, or (None, None)


class NotRun(Exception):
    """A configuration could not be brought up; the message is the report's reason."""


@dataclass
class Forwarder:
    """A forwarding process (HAProxy, pylvs) the harness started and will end by PID."""

    popen: subprocess.Popen
    log: Path
    what: str

    def alive(self) -> bool:
        return self.popen.poll() is None


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tree_ticks(pid: int) -> tuple[int, int] | None:
    """(utime+stime, stime) of `pid` and its live descendants (pylvs may run dataplane
    workers as child processes), in clock ticks; None when `pid` is gone."""
    stats: dict[int, tuple[int, int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stats[int(entry)] = parsers.pid_stat_fields(f.read())
            except (OSError, ValueError, IndexError):
                continue
    if pid not in stats:
        return None
    children: dict[int, list[int]] = {}
    for p, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    total, system, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        total += stats[p][1]
        system += stats[p][2]
        todo += children.get(p, [])
    return total, system


class Bench:
    def __init__(self, opts: Options, log: Callable[[str], None] = _log) -> None:
        self.o = opts
        self.log = log
        self.work = Path(tempfile.mkdtemp(prefix="pylvs-bench-"))
        os.chmod(self.work, 0o755)  # nginx workers run as nobody
        self.bin = self.work / "bin"
        self.labs: dict[str, Lab] = {}
        self.samples: list[Sample] = []
        self.failures: dict[str, list[tuple[int, str]]] = {}
        self.caveats: list[str] = []
        self.env: dict[str, str] = {}
        self.fwd: Forwarder | None = None
        self.active: str | None = None  # the configuration that is up
        self.hz = os.sysconf("SC_CLK_TCK")
        self.ncpu = os.cpu_count() or 1
        self.ports = confgen.Ports()

    # -- the whole run ---------------------------------------------------------------------
    def run(self) -> str:
        try:
            self.preflight()
            self.build_tools()
            self.collect_env()
            self.setup_labs()
            for run in range(1, self.o.runs + 1):
                for cfg in self.o.configs:
                    self.one_config(run, cfg)
        finally:
            self.teardown()
        return self.report()

    def report(self) -> str:
        status = {}
        for cfg, fails in self.failures.items():
            ok_runs = {s.run for s in self.samples if s.config == cfg}
            if not ok_runs:
                status[cfg] = f"not run: {fails[0][1]}"
            else:
                self.caveats += [f"{cfg} did not come up in run {r}: {msg}" for r, msg in fails]
        caveats = list(self.caveats)
        if self.o.quick or self.o.runs == 1:
            caveats.insert(0, f"{self.o.runs} run of {self.o.dur} s: a smoke test, not numbers to quote.")
        if any(c in DR_CONFIGS for c in self.o.configs):
            caveats.append("DR, DRL and DRX run on a second lab of kind `direct` (replies return through gw, not "
                           "the director); their ratios are against A of the NAT lab in the same run.")
        caveats.append(f"Load generators, forwarder, nginx and sinks share this machine's {self.ncpu} vCPUs "
                       "(see ../shared/lab/README.md, Caveats); box CPU counts every process on the machine.")
        return render(self.samples, self.o.configs, self.o.metric_keys, status, runs=self.o.runs,
                      dur=self.o.dur, command=self.o.command, env=self.env, caveats=caveats)

    # -- preparation -----------------------------------------------------------------------
    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise SystemExit("python -m bench.forward needs root (network namespaces)")
        missing = [t for t in REQUIRED_TOOLS if not shutil.which(t)]
        if missing:
            raise SystemExit(f"missing tools: {' '.join(missing)} (make bench-forward installs them)")
        if "C" in self.o.configs and not shutil.which("haproxy"):
            self.failures["C"] = [(0, "haproxy is not installed")]

    def build_tools(self) -> None:
        self.bin.mkdir(mode=0o755)
        for name in ("udp_blast", "udp_sink"):
            proc = subprocess.run(["cc", "-O2", "-Wall", "-o", str(self.bin / name), str(SRC / f"{name}.c")],
                                  capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"cc {SRC / name}.c failed: {proc.stderr.strip()}")
        self.log(f"built udp_blast, udp_sink in {self.bin}")

    def collect_env(self) -> None:
        def version(argv: list[str]) -> str:
            try:
                p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"unavailable ({exc})"
            return _first_line(p.stdout + "\n" + p.stderr) or "unknown"

        cpu = next((ln.split(":", 1)[1].strip() for ln in _read(Path("/proc/cpuinfo")).splitlines()
                    if ln.startswith("model name")), "unknown")
        commit = version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
        # read-only: --no-optional-locks keeps status from refreshing (writing) the index
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True, timeout=30, check=False)
        if dirty.returncode == 0 and dirty.stdout.strip():
            commit += " + uncommitted changes"
        self.env = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "kernel": platform.release(),
            "cpus": f"{self.ncpu} x {cpu}",
            "load average at start": " ".join(_read(Path("/proc/loadavg")).split()[:3]),
            "pylvs commit": commit,
            "python (pylvs lvs)": version([self.o.python, "--version"]),
            "wrk": version(["wrk", "-v"]),
            "iperf3": version(["iperf3", "-v"]),
            "nginx": version(["nginx", "-v"]),
            "haproxy": version(["haproxy", "-v"]) if shutil.which("haproxy") else "not installed",
            "nft": version(["nft", "--version"]),
            "cc": version(["cc", "--version"]),
        }

    def setup_labs(self) -> None:
        kinds = list(dict.fromkeys(lab_key(c) for c in self.o.configs))
        www = self.work / "www"
        www.mkdir(mode=0o755)
        (www / "index.html").write_text(confgen.INDEX_HTML)
        os.chmod(www / "index.html", 0o644)
        for key in kinds:
            kind = "direct" if key == "direct" else "nat"
            self.log(f"building the {key} lab")
            lab = build_lab(kind, real_servers=3, clients=1, director_queues=2 if key == "nat2q" else 1)
            self.labs[key] = lab
            self.env[f"lab ({key})"] = lab.name
            client = lab.clients[0]
            for host in [client, *lab.real_servers]:
                netns.sysctl(host.netns, LOAD_SYSCTLS)
            if kind == "nat":
                # A talks to rs1 itself: the client needs the private segment via dir1.
                netns.ip(client.netns, "route", "add", SEGMENT_NETS[PRIVATE], "via", lab.director.ip(PUBLIC))
            for rs in lab.real_servers:
                self.start_services(lab, rs, www)
            self.wait_services(lab)

    def start_services(self, lab: Lab, rs: Host, www: Path) -> None:
        d = self.work / lab.name / rs.name
        d.mkdir(parents=True)
        os.chmod(d.parent, 0o755)
        os.chmod(d, 0o755)
        conf = d / "nginx.conf"
        conf.write_text(confgen.nginx_conf(str(d), str(www), self.ports.http))
        with open(d / "nginx.out", "wb") as out:
            lab.popen(rs, ["nginx", "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
                      what="nginx", stdout=out, stderr=subprocess.STDOUT)
        with open(d / "iperf3.log", "wb") as out:
            lab.popen(rs, ["iperf3", "-s", "-p", str(self.ports.iperf), "--idle-timeout", str(IPERF_IDLE)],
                      what="iperf3 -s", stdout=out, stderr=subprocess.STDOUT)

    def wait_services(self, lab: Lab) -> None:
        deadline = time.monotonic() + SERVICE_READY
        for rs, rip in zip(lab.real_servers, lab.rips, strict=True):
            while True:
                try:
                    if lab.http_get(lab.director, rip, self.ports.http, timeout=PROBE_TIMEOUT).status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    err = _read(self.work / lab.name / rs.name / "error.log")
                    raise SystemExit(f"{lab.name}: nginx on {rs.name} ({rip}:{self.ports.http}) does not "
                                     f"answer: {parsers.error_line(err)}")
                time.sleep(0.1)
        for p in lab.processes:
            if p.what == "iperf3 -s" and p.popen is not None and p.popen.poll() is not None:
                raise SystemExit(f"{lab.name}: iperf3 -s on {p.host} exited ({p.popen.returncode})")
        self.log(f"{lab.name}: nginx :{self.ports.http}, iperf3 :{self.ports.iperf} up on "
                 f"{', '.join(lab.rips)}")

    # -- one configuration -----------------------------------------------------------------
    def lab_of(self, cfg: str) -> Lab:
        return self.labs[lab_key(cfg)]

    def one_config(self, run: int, cfg: str) -> None:
        if self.failures.get(cfg) and not any(s.config == cfg for s in self.samples):
            # Never came up (or cannot run here, e.g. a tool is missing): do not spend
            # another --ready-timeout on it; the report gives the first reason.
            self.log(f"=== run {run} config {cfg}: skipped, it did not come up before")
            return
        self.log(f"=== run {run} config {cfg}")
        self.active = cfg
        try:
            try:
                target = self.up(cfg)
                self.wait_ready(cfg, target)
            except NotRun as exc:
                self.failures.setdefault(cfg, []).append((run, str(exc)))
                self.log(f"{cfg}: not run: {exc}")
                return
            for group in self.o.metrics:
                if self.fwd is not None and not self.fwd.alive():
                    self.caveats.append(f"run {run} {cfg}: the forwarder exited during the measurements: "
                                        f"{parsers.error_line(_read(self.fwd.log))}")
                    break
                self.measure(run, cfg, group, target)
                time.sleep(SETTLE)
        finally:
            self.down(cfg)
            self.active = None
        time.sleep(SETTLE)

    def up(self, cfg: str) -> str:
        """Bring `cfg` up in its lab's dir1; returns the address the client targets."""
        lab = self.lab_of(cfg)
        ns = lab.director.netns
        vip, rips = lab.vip, lab.rips
        if cfg in ("A", "B", "C"):
            # The NAT real servers' gateway; pylvs (D*) adds it itself (netctl).
            netns.ip(ns, "addr", "add", f"{lab.nat_router}/32", "dev", "eth1", "label", "eth1:1")
        if cfg == "A":
            return rips[0]
        if cfg == "B":
            proc = lab.run(lab.director, ["nft", "-f", "-"], input=confgen.nft_dnat(vip, rips, self.ports),
                           check=False)
            if proc.returncode != 0:
                raise NotRun(f"nft: {parsers.error_line(proc.stderr)}")
            return vip
        if cfg == "C":
            netns.ip(ns, "addr", "add", f"{vip}/32", "dev", "lo")  # HAProxy binds the VIP
            path = self.work / "haproxy.cfg"
            path.write_text(confgen.haproxy_cfg(vip, rips, self.ports))
            self.start_forwarder(lab, ["haproxy", "-db", "-f", str(path)], "haproxy")
            return vip
        # D1, D2, DR: pylvs from a generated lvs.cf
        network = "direct" if cfg in DR_CONFIGS else "nat"
        fwmark = confgen.HTTP_FWMARK if cfg == "D3F" else 0
        if fwmark:
            lab.run(lab.director, ["iptables", "-t", "mangle", "-A", *confgen.mark_rule(vip, self.ports)])
        text = confgen.lvs_cf(network, vip, rips, primary=lab.director.ip(PUBLIC),
                              primary_private=lab.director.ip(PRIVATE),
                              nat_router=lab.nat_router if network == "nat" else None, ports=self.ports,
                              http_fwmark=fwmark)  # fmt: skip
        result = check_text(text, f"lvs.cf.{cfg}")
        if not result.ok:
            raise NotRun(f"generated lvs.cf is invalid: {result.diagnostics[0]}")
        path = self.work / f"lvs.cf.{cfg}"
        path.write_text(text)
        self.start_forwarder(lab, [self.o.python, "-m", "pylvs", "lvs", "-c", str(path), "--nodaemon",
                                   "--io", *PYLVS_IO[cfg]], f"pylvs-{cfg}")
        return vip

    def start_forwarder(self, lab: Lab, argv: list[str], what: str) -> None:
        log = self.work / f"{what}.log"
        with open(log, "ab") as out:
            popen = lab.popen(lab.director, argv, what=what, stdout=out, stderr=subprocess.STDOUT,
                              cwd=str(REPO))
        self.fwd = Forwarder(popen, log, what)

    def wait_ready(self, cfg: str, target: str) -> None:
        """Until the target answers HTTP 200 from the client (bounded)."""
        lab = self.lab_of(cfg)
        deadline = time.monotonic() + self.o.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.fwd is not None and not self.fwd.alive():
                text = _read(self.fwd.log)
                raise NotRun(f"{parsers.error_line(text)} (exit {self.fwd.popen.returncode})")
            try:
                reply = lab.http_get(lab.clients[0], target, self.ports.http, timeout=PROBE_TIMEOUT)
                if reply.status == 200:
                    return
                last = f"HTTP {reply.status}"
            except (OSError, ValueError, IndexError) as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.2)
        said = ""
        if self.fwd is not None:  # still running: its latest line says what it is doing
            lines = [ln.strip() for ln in _read(self.fwd.log).splitlines() if ln.strip()]
            said = f"; its last log line: {parsers.strip_log_prefix(lines[-1])}" if lines else "; it logged nothing"
        raise NotRun(f"{target}:{self.ports.http} did not answer HTTP within {self.o.ready_timeout:g} s "
                     f"({last}){said}")

    def stop_forwarder(self, cfg: str) -> None:
        fwd, self.fwd = self.fwd, None
        if fwd is None:
            return
        netns.end_process(fwd.popen.pid, None, grace=STOP_GRACE, popen=fwd.popen)
        code = fwd.popen.poll()
        if code is None:
            self.caveats.append(f"{cfg}: {fwd.what} (pid {fwd.popen.pid}) survived SIGKILL")
        elif code == -9:
            self.caveats.append(f"{cfg}: {fwd.what} ignored SIGTERM for {STOP_GRACE:g} s and was SIGKILLed")

    def down(self, cfg: str) -> None:
        """Undo `up` (also after a half-done up); never raises."""
        lab = self.labs.get(lab_key(cfg))
        with contextlib.suppress(Exception):
            self.stop_forwarder(cfg)
        if lab is None or lab.destroyed:
            return
        ns = lab.director.netns
        try:
            if cfg == "B":
                lab.run(lab.director, ["nft", "delete", "table", "ip", confgen.NFT_TABLE], check=False)
            if cfg in ("A", "B", "C"):
                netns.ip(ns, "addr", "del", f"{lab.nat_router}/32", "dev", "eth1", check=False)
            if cfg == "C":
                netns.ip(ns, "addr", "del", f"{lab.vip}/32", "dev", "lo", check=False)
            if cfg == "D3F":
                lab.run(lab.director, ["iptables", "-t", "mangle", "-D", *confgen.mark_rule(lab.vip, self.ports)],
                        check=False)
            if cfg in PYLVS_IO:
                self.check_leftovers(cfg, lab)
        except Exception as exc:  # noqa: BLE001 -- teardown goes on; the lab is destroyed anyway
            self.caveats.append(f"{cfg}: cleaning up dir1 failed: {exc}")

    def check_leftovers(self, cfg: str, lab: Lab) -> None:
        """After pylvs stopped: did it remove its rules and addresses?  Whatever is left is
        noted and removed, so the next configuration starts from a clean dir1."""
        ns = lab.director.netns
        ruleset = lab.run(lab.director, ["nft", "list", "ruleset"], check=False).stdout
        rules = [ln.strip() for ln in ruleset.splitlines()
                 if ln.strip() and not ln.strip().startswith(_NFT_STRUCTURE)]
        if rules:
            self.caveats.append(f"{cfg}: {len(rules)} nftables rule line(s) left in dir1 after SIGTERM, "
                                f"e.g. `{rules[0]}` (flushed by the harness)")
        if ruleset.strip():
            lab.run(lab.director, ["nft", "flush", "ruleset"], check=False)
        addrs = netns.ip(ns, "-4", "-o", "addr", "show", check=False).stdout
        for addr, dev in ((lab.vip, "eth0"), (lab.nat_router, "eth1")):
            if f" {addr}/" in addrs:
                self.caveats.append(f"{cfg}: {addr} left on dir1 after SIGTERM (removed by the harness)")
                netns.ip(ns, "addr", "del", f"{addr}/32", "dev", dev, check=False)

    # -- measurements ----------------------------------------------------------------------
    def _begin(self) -> tuple[tuple[int, int], tuple[int, int] | None, float]:
        ticks = _tree_ticks(self.fwd.popen.pid) if self.fwd else None
        return parsers.cpu_totals(_read(Path("/proc/stat"))), ticks, time.monotonic()

    def _end(self, begin: tuple[tuple[int, int], tuple[int, int] | None, float]) -> tuple[float | None, Fwd]:
        """Busy cores of the box, and the forwarder's CPU (% of one core: all, system)."""
        cpu0, ticks0, t0 = begin
        busy = parsers.busy_cores(cpu0, parsers.cpu_totals(_read(Path("/proc/stat"))), self.ncpu)
        fwd: Fwd = (None, None)
        if self.fwd is not None and ticks0 is not None:
            ticks1 = _tree_ticks(self.fwd.popen.pid)
            dt = time.monotonic() - t0
            if ticks1 is not None and dt > 0:
                fwd = tuple(100.0 * (b - a) / self.hz / dt for a, b in zip(ticks0, ticks1, strict=True))
        return busy, fwd

    def _client(self, lab: Lab, argv: list[str], slack: int = GEN_SLACK) -> tuple[str, str]:
        """A generator in the client namespace, bounded by `timeout` (and by our own wait)."""
        bound = self.o.dur + slack
        try:
            p = lab.run(lab.clients[0], ["timeout", str(bound), *argv], timeout=bound + 5, check=False)
        except subprocess.TimeoutExpired:
            return "", f"{argv[0]} still running after {bound + 5} s"
        err = "" if p.returncode == 0 else f"{argv[0]} exit {p.returncode}: {parsers.error_line(p.stderr + p.stdout)}"
        return p.stdout, err

    def _add(self, run: int, cfg: str, metric: str, value: float | None, busy: float | None,
             fwd: Fwd, note: str = "") -> None:
        self.samples.append(Sample(run, cfg, metric, value, busy, fwd[0], note, fwd_sys_pct=fwd[1]))
        shown = "n/a" if value is None else f"{value:,.2f}"
        extra = f" fwd {fwd[0]:.0f}% (sys {fwd[1]:.0f}%)" if fwd[0] is not None else ""
        busy_s = f"{busy:.2f}" if busy is not None else "n/a"
        self.log(f"  run {run} {cfg} {metric} = {shown} (busy {busy_s} cores{extra}){' ' + note if note else ''}")

    def measure(self, run: int, cfg: str, group: str, target: str) -> None:
        lab = self.lab_of(cfg)
        url = f"http://{target}:{self.ports.http}/"
        dur = str(self.o.dur)
        if group in ("cps", "rps", "lat"):
            if group == "cps":
                argv = ["wrk", "-t1", f"-c{self.o.cps_conns}", f"-d{dur}s", "-H", "Connection: close", url]
            elif group == "rps":
                argv = ["wrk", "-t1", f"-c{self.o.rps_conns}", f"-d{dur}s", url]
            else:
                argv = ["wrk", "-t1", "-c1", f"-d{dur}s", "--latency", url]
            b = self._begin()
            out, err = self._client(lab, argv)
            busy, fwd = self._end(b)
            w = parsers.parse_wrk(out)
            values = {"lat_p50": w.p50_us, "lat_p99": w.p99_us} if group == "lat" else {group: w.rps}
            for metric, value in values.items():
                self._add(run, cfg, metric, value, busy, fwd,
                          (err or "wrk printed no result") if value is None else w.problem)
        elif group == "udp":
            if cfg == "C":
                self._add(run, cfg, "udp", None, None, (None, None), "HAProxy 2.6 has no generic UDP proxy")
                return
            self.measure_udp(run, cfg, lab, target)
        elif group == "bulk":
            argv = ["iperf3", "-c", target, "-p", str(self.ports.iperf), "-t", dur, "-J", "--connect-timeout", "3000"]
            b = self._begin()
            out, err = self._client(lab, argv, slack=GEN_SLACK + 5)
            busy, fwd = self._end(b)
            gbps, _retrans, perr = parsers.parse_iperf3(out)
            self._add(run, cfg, "bulk", gbps, busy, fwd, "" if gbps is not None else (perr or err))

    def measure_udp(self, run: int, cfg: str, lab: Lab, target: str) -> None:
        life = self.o.dur + SINK_TAIL
        sinks = []
        try:
            for rs in lab.real_servers:
                sinks.append(lab.popen(rs, ["timeout", str(life + GEN_SLACK), str(self.bin / "udp_sink"),
                                            str(self.ports.udp), str(life)],
                                       what="udp_sink", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            time.sleep(SINK_LEAD)
            b = self._begin()
            out, err = self._client(lab, [str(self.bin / "udp_blast"), target, str(self.ports.udp), str(self.o.dur),
                                          str(UDP_PAYLOAD), str(UDP_SOCKETS), str(UDP_BATCH)])
            busy, fwd = self._end(b)
            received = []
            for p in sinks:
                try:
                    text, _ = p.communicate(timeout=life + GEN_SLACK + 5)
                except subprocess.TimeoutExpired:
                    text = ""
                received.append(parsers.parse_sink(text or ""))
        finally:
            for p in sinks:
                netns.end_process(p.pid, None, popen=p)
        blast = parsers.parse_blast(out)
        if blast is None or None in received:
            self._add(run, cfg, "udp", None, busy, fwd, err or "udp_blast/udp_sink printed no count")
            return
        sent, secs = blast
        total = sum(r for r in received if r is not None)
        self.log(f"  udp: sent {sent} in {secs:.2f} s, delivered per real server "
                 f"{'/'.join(str(r) for r in received)}")
        self._add(run, cfg, "udp", total / secs if secs > 0 else None, busy, fwd,
                  "" if total else f"nothing delivered ({sent} sent)")

    # -- teardown --------------------------------------------------------------------------
    def teardown(self) -> None:
        if self.active is not None:
            self.down(self.active)
        for lab in self.labs.values():
            try:
                lab.destroy()
            except Exception as exc:  # noqa: BLE001 -- report, go on with the others
                self.log(f"destroying lab {lab.name}: {exc}")
        if self.o.keep_work:
            self.log(f"logs and generated files kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def reference_ran(bench: Bench) -> bool:
    return any(s.config == REFERENCE and s.value is not None for s in bench.samples)
