"""`pylvs lvs --metrics` scraped by a real Prometheus (Debian's package), all in a lab.

The director (dir1) serves its metrics on its public address; Prometheus runs in client2's
namespace (the monitoring host) with a one-second scrape interval and its storage in the
test's folder, and is killed by its PID at the end.  client1 makes real HTTP connections
through the VIP: some closed, some held open.  Prometheus's query API must then return
the IPVS series with node_exporter's labels and values that match that traffic, and
``promtool check metrics`` must accept the page as the director serves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter

import pytest
from waits import wait_for

from pylvs.lab import topology as topo
from pylvs.lab.director import LabDirector
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.lab.probes import http_keepalive_get

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
METRICS = f"{topo.DIRECTOR_PUBLIC[0]}:9101"  # dir1's public address; any free port
PROM_HOST = "client2"  # the monitoring host: on the public segment, not a client of the VIP
PROM_LISTEN = "127.0.0.1:9090"  # Prometheus's own default port, inside client2's namespace
PROM_START_TIMEOUT = 60.0  # seconds: TSDB set-up and config load on a busy 2-core machine
PROM_STOP_TIMEOUT = 10.0
SCRAPE_TIMEOUT = 20.0  # seconds for a scrape (1 s apart) to show what the traffic did
CURL_TIMEOUT = 5  # seconds per HTTP request
POLL = 0.25
CLOSED = 20  # connections made and closed through the VIP
HELD = 4  # keep-alive connections held open: rr puts 2 on each server
PROM_CONFIG = f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s  # at most the interval (Prometheus refuses a longer one)
scrape_configs:
  - job_name: pylvs
    static_configs:
      - targets: ["{METRICS}"]
"""


def curl(lab, *args: str) -> str | None:
    """GET from the monitoring host; None when it fails (not up yet)."""
    r = lab.run(PROM_HOST, ["curl", "-sSf", "--max-time", str(CURL_TIMEOUT), *args], timeout=CURL_TIMEOUT + 5,
                check=False)  # fmt: skip
    return r.stdout if r.returncode == 0 else None


def query(lab, expr: str) -> list[tuple[dict, float]]:
    """Prometheus's /api/v1/query: (labels without __name__, value) per series."""
    text = curl(lab, "-G", "--data-urlencode", f"query={expr}", f"http://{PROM_LISTEN}/api/v1/query")
    assert text is not None, f"query {expr!r} failed"
    answer = json.loads(text)
    assert answer["status"] == "success", answer
    return [({k: v for k, v in r["metric"].items() if k != "__name__"}, float(r["value"][1]))
            for r in answer["data"]["result"]]  # fmt: skip


def value(lab, expr: str) -> float | None:
    """The single value of ``expr``, or None while Prometheus has none."""
    result = query(lab, expr)
    assert len(result) <= 1, result
    return result[0][1] if result else None


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus in PROM_HOST's namespace scraping METRICS; killed by PID after."""
    if PROMETHEUS is None or PROMTOOL is None:
        pytest.skip("prometheus/promtool not found (Debian package prometheus; `make deps` installs it)")
    started = []

    def start(lab):
        folder = tmp_path / "prometheus"
        folder.mkdir()
        (folder / "prometheus.yml").write_text(PROM_CONFIG)
        check = subprocess.run([PROMTOOL, "check", "config", str(folder / "prometheus.yml")], capture_output=True,
                               text=True, timeout=CURL_TIMEOUT * 6, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        argv = [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={PROM_LISTEN}", "--log.level=warn"]  # fmt: skip
        with open(folder / "prometheus.log", "wb") as log:
            proc = lab.popen(PROM_HOST, argv, what="prometheus", stdout=log, stderr=subprocess.STDOUT, cwd=folder)
        started.append(proc)
        deadline = time.monotonic() + PROM_START_TIMEOUT
        while curl(lab, f"http://{PROM_LISTEN}/-/ready") is None:
            log_text = (folder / "prometheus.log").read_text(errors="replace")[-3000:]
            assert proc.poll() is None, f"prometheus exited {proc.returncode}:\n{log_text}"
            assert time.monotonic() < deadline, f"prometheus not ready after {PROM_START_TIMEOUT:.0f} s:\n{log_text}"
            time.sleep(POLL)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM to its PID (ip netns exec execs it)
            try:
                proc.wait(PROM_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_prometheus_scrapes_the_director(make_lab, prometheus, tmp_path):
    lab = make_lab("nat", real_servers=2, clients=2)
    rip_of = {rs.name: rip for rs, rip in zip(lab.real_servers, lab.rips, strict=True)}
    d = LabDirector(lab, tmp_path / "lvs", lvs_cf(lab, [Service(scheduler="rr")]), extra=("--metrics", METRICS))
    held = []
    try:
        d.wait_for(lambda s: sum(len(v["dests"]) for v in s["services"]) == 2, 30, "both real servers in")
        prometheus(lab)
        wait_for(lambda: value(lab, 'up{job="pylvs"}') == 1, SCRAPE_TIMEOUT, "a first scrape")

        for _ in range(CLOSED):
            assert lab.http_get("client1", topo.VIP).status == 200
        answered = Counter()
        for _ in range(HELD):
            s = lab.socket("client1")
            held.append(s)
            s.settimeout(CURL_TIMEOUT)
            s.connect((topo.VIP, topo.HTTP_PORT))
            answered[http_keepalive_get(s, topo.VIP).body.decode().strip()] += 1

        # Counters: at least every connection made; packets and bytes both ways.
        wait_for(lambda: (value(lab, "pylvs_ipvs_connections_total") or 0) >= CLOSED + HELD, SCRAPE_TIMEOUT,
                 "connections_total counts the traffic")
        for name in ("incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes"):
            assert value(lab, f"pylvs_ipvs_{name}_total") >= CLOSED + HELD, name

        # Per real server: node_exporter's labels, the held connections active where they went.
        want_active = {rip_of[name]: n for name, n in answered.items()}
        # local_mark is "" (not a firewall-mark service): Prometheus stores an empty label as
        # no label, so the API leaves it out, as it does for node_exporter's.
        labels = {rip: {"local_address": topo.VIP, "local_port": str(topo.HTTP_PORT), "remote_address": rip,
                        "remote_port": str(topo.HTTP_PORT), "proto": "TCP", "job": "pylvs", "instance": METRICS}
                  for rip in lab.rips}  # fmt: skip

        def active() -> dict[str, float] | None:
            got = query(lab, "pylvs_ipvs_backend_connections_active")
            by_rip = {m["remote_address"]: v for m, v in got}
            return got if by_rip == {rip: want_active.get(rip, 0) for rip in lab.rips} else None

        got = wait_for(active, SCRAPE_TIMEOUT, f"active connections {want_active}")
        assert {m["remote_address"]: m for m, _ in got} == labels
        inactive = query(lab, "pylvs_ipvs_backend_connections_inactive")
        assert {m["remote_address"]: m for m, _ in inactive} == labels
        assert 1 <= sum(v for _, v in inactive) <= CLOSED  # the closed ones, until their entries expire
        assert {m["remote_address"]: v for m, v in query(lab, "pylvs_ipvs_backend_weight")} == dict.fromkeys(
            lab.rips, 1)
        assert {m["remote_address"]: v for m, v in query(lab, 'pylvs_backend_status{state="UP"}')} == dict.fromkeys(
            lab.rips, 1)
        assert value(lab, "sum(pylvs_backend_status)") == len(lab.rips)  # one state at a time

        # The director as a whole.
        assert value(lab, 'pylvs_ha_state{state="active"}') == 1
        assert value(lab, 'pylvs_ha_state{state="standby"}') == 0
        assert value(lab, "pylvs_conn_table_entries") >= HELD
        assert value(lab, "pylvs_conn_table_capacity") > 0
        assert value(lab, "pylvs_config_generation") >= 1
        assert value(lab, "pylvs_config_last_reload_successful") == 1
        assert value(lab, "pylvs_config_reload_failures_total") == 0
        assert value(lab, "sum(pylvs_dataplane_packets_dropped_total)") == 0
        start = value(lab, "pylvs_process_start_time_seconds")
        assert start is not None and start <= time.time()

        page = curl(lab, f"http://{METRICS}/metrics")
        assert page is not None
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=page, capture_output=True, text=True,
                              timeout=CURL_TIMEOUT * 6, check=False)  # fmt: skip
        assert lint.returncode == 0, lint.stdout + lint.stderr
    finally:
        for s in held:
            s.close()
        d.stop()
