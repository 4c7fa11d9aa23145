"""The Prometheus collector (pylvs.metrics) on the status of a real director.

The director runs as in test_director.py (a recording netctl, packets fed in-process,
probes that always pass), so the status dict is the one ``Director.status()`` builds:
the forwarder's tables and counters and the health runner's snapshot.  Every series is
checked with its labels; ``promtool check metrics`` (Debian's prometheus package) lints
the page.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.request

import pytest
from feed_director import feed_directors
from golden import CLIENT, CPORT, FWM_VIP, FWMARK, HEAD, RIP1, RIP2, VIP, VPORT, tcp, virtual
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pylvs.metrics import DROP_REASONS, FAMILIES, MetricsServer, StatusCollector, parse_listen

PROMTOOL = shutil.which("promtool")
PROMTOOL_TIMEOUT = 30  # seconds
HTTP_TIMEOUT = 5  # seconds
DNS_PORT = 53
WWW_WEIGHTS = (1, 64)  # 64 enters at 64 >> 5 = 2 (slow start): current differs from configured
CONFIG = (HEAD.format(network="nat")
          + virtual("www", VIP, VPORT, sched="wlc", servers=[("web1", RIP1, None, WWW_WEIGHTS[0]),
                                                              ("web2", RIP2, None, WWW_WEIGHTS[1])])
          + virtual("dns", VIP, DNS_PORT, proto="udp", servers=[("ns1", RIP1, None, 1)])
          + virtual("shop", FWM_VIP, VPORT, servers=[("s1", RIP1, None, 1), ("s2", RIP2, None, 1)],
                    extra=f"     fwmark = {FWMARK}\n"))  # fmt: skip

# The IPVS label values, as node_exporter gives them (local_address, local_port,
# remote_address, remote_port, proto, local_mark); a firewall-mark service has no address,
# port 0, proto FWM and the mark in /proc/net/ip_vs's %08X.
WWW1 = (VIP, "80", RIP1, "80", "TCP", "")
WWW2 = (VIP, "80", RIP2, "80", "TCP", "")
DNS1 = (VIP, "53", RIP1, "53", "UDP", "")
SHOP1 = ("", "0", RIP1, "80", "FWM", "00000005")
SHOP2 = ("", "0", RIP2, "80", "FWM", "00000005")
BACKENDS = {WWW1, WWW2, DNS1, SHOP1, SHOP2}
LABELS = ("local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark")


@pytest.fixture
def director(tmp_path):
    yield from feed_directors(tmp_path, CONFIG)


def render(status) -> str:
    registry = CollectorRegistry()
    registry.register(StatusCollector(status if callable(status) else lambda: status))
    return generate_latest(registry).decode()


def series(page: str) -> dict[str, dict[tuple, float]]:
    """{sample name: {label values (LABELS order, then the others sorted): value}}."""
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            ipvs = tuple(s.labels.pop(k) for k in LABELS if k in s.labels)
            out.setdefault(s.name, {})[ipvs + tuple(v for _, v in sorted(s.labels.items()))] = s.value
    return out


def promtool_check(page: str) -> None:
    if PROMTOOL is None:
        pytest.skip("promtool not found (Debian package prometheus; `make deps` installs it)")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=page, capture_output=True, text=True,
                       timeout=PROMTOOL_TIMEOUT, check=False)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_series_of_a_running_director(director):
    d, feed = director()
    feed.send([tcp(CLIENT, VIP, CPORT, VPORT, "S")])  # one connection to www
    status = d.status()
    got = series(render(status))
    [www] = [s for s in status["services"] if s["port"] == VPORT and not s["fwmark"]]
    [chosen] = [x["addr"] for x in www["dests"] if x["inactive"]]  # a SYN_RECV entry counts inactive

    for name, stat in (("connections", 1), ("incoming_packets", 1), ("outgoing_packets", 0),
                       ("incoming_bytes", 40), ("outgoing_bytes", 0)):  # 40: the bare SYN's IP+TCP  # fmt: skip
        assert got[f"pylvs_ipvs_{name}_total"] == {(): stat}, name
    assert got["pylvs_ipvs_backend_connections_active"] == dict.fromkeys(BACKENDS, 0)
    assert got["pylvs_ipvs_backend_connections_inactive"] == {
        b: float(b[:3] == (VIP, "80", chosen)) for b in BACKENDS}
    first_weight = max(1, WWW_WEIGHTS[1] >> 5)  # nanny's slow start (health.monitor)
    assert got["pylvs_ipvs_backend_weight"] == {WWW1: 1, WWW2: first_weight, DNS1: 1, SHOP1: 1, SHOP2: 1}
    assert got["pylvs_backend_configured_weight"] == {WWW1: 1, WWW2: WWW_WEIGHTS[1], DNS1: 1, SHOP1: 1, SHOP2: 1}
    assert got["pylvs_backend_status"] == {**{(*b, "UP"): 1 for b in BACKENDS}, **{(*b, "DOWN"): 0 for b in BACKENDS}}
    assert got["pylvs_backend_check_up_down_total"] == dict.fromkeys(BACKENDS, 0)  # went up, never down
    assert got["pylvs_backend_check_duration_seconds"] == dict.fromkeys(BACKENDS, 0.0)  # always_up takes 0 s

    assert got["pylvs_ha_state"] == {("active",): 1, ("standby",): 0}
    assert got["pylvs_ha_managed"] == {(): 0}
    assert got["pylvs_dataplane_packets_dropped_total"] == {(r,): 0 for r in DROP_REASONS}
    assert got["pylvs_conn_table_entries"] == {(): 1}
    assert got["pylvs_conn_table_capacity"] == {(): 1024}
    assert got["pylvs_conn_table_removed_total"] == {("expired",): 0, ("drop_entry",): 0}
    assert got["pylvs_defense_engaged"] == {("drop_entry",): 0, ("drop_packet",): 0, ("secure_tcp",): 0}
    assert got["pylvs_config_generation"] == {(): status["generation"]}
    assert got["pylvs_config_serial_no"] == {(): 1}
    assert got["pylvs_config_last_reload_successful"] == {(): 1}
    assert got["pylvs_config_last_reload_success_timestamp_seconds"] == {(): d.started}
    assert got["pylvs_config_reloads_total"] == {(): 0}
    assert got["pylvs_config_reload_failures_total"] == {(): 0}
    assert got["pylvs_process_start_time_seconds"] == {(): d.started}
    assert set(got) == {f.name for f in FAMILIES}  # nothing else, nothing missing


def test_drops_reloads_and_a_removed_service(director, tmp_path):
    d, feed = director()
    feed.send([tcp(CLIENT, VIP, CPORT, VPORT, "S")])
    collector = StatusCollector(d.status)
    registry = CollectorRegistry()
    registry.register(collector)
    assert series(generate_latest(registry).decode())["pylvs_ipvs_connections_total"] == {(): 1}

    (tmp_path / "lvs.cf").write_text(CONFIG + "virtual broken {\n")
    assert not d.reload()
    failed = series(generate_latest(registry).decode())
    assert failed["pylvs_config_reload_failures_total"] == {(): 1}
    assert failed["pylvs_config_last_reload_successful"] == {(): 0}
    # The failure does not move the last success (the start).
    assert failed["pylvs_config_last_reload_success_timestamp_seconds"] == {(): d.started}

    # www goes away: its connection stays in the totals, as /proc/net/ip_vs_stats keeps it.
    (tmp_path / "lvs.cf").write_text(CONFIG.replace("virtual www", "virtual www2").replace(
        f"port = {VPORT}\n", "port = 8080\n", 1))
    assert d.reload()
    feed.send([tcp(CLIENT, VIP, CPORT + 1, DNS_PORT, "S")])  # nothing on TCP 53: passed, not counted
    feed.send([bytes.fromhex("4500001400004000" "4006") + bytes(10)])  # IPv4 header only: l4 truncated
    got = series(generate_latest(registry).decode())
    assert got["pylvs_ipvs_connections_total"] == {(): 1}
    assert got["pylvs_config_reloads_total"] == {(): 1}
    assert got["pylvs_config_last_reload_successful"] == {(): 1}
    assert got["pylvs_config_last_reload_success_timestamp_seconds"][()] > d.started
    assert got["pylvs_dataplane_packets_dropped_total"][("parse_l4_truncated",)] == 1
    assert sum(got["pylvs_dataplane_packets_dropped_total"].values()) == 1
    assert set(got["pylvs_ipvs_backend_weight"]) == {DNS1, SHOP1, SHOP2}  # www's series are gone (www2's
    # servers enter at their first passing check, an interval away)


def test_standby_director(director):
    d, _ = director(standby=True)
    got = series(render(d.status()))
    assert got["pylvs_ha_state"] == {("active",): 0, ("standby",): 1}
    assert got["pylvs_ha_managed"] == {(): 1}
    assert got["pylvs_ipvs_connections_total"] == {(): 0}
    assert set(got["pylvs_ipvs_backend_weight"]) == BACKENDS  # the tables are loaded, ready to take over


def test_empty_and_partial_status():
    assert series(render({})) == {}  # no key, no series (and no error)
    got = series(render({"role": "standby", "services": [], "health": [], "reasons": {}}))
    assert got["pylvs_ha_state"] == {("active",): 0, ("standby",): 1}
    assert got["pylvs_ipvs_connections_total"] == {(): 0}
    assert "pylvs_ipvs_backend_weight" not in got and "pylvs_config_generation" not in got
    # A failed load seen first: no success time is known, so none is made up ...
    got = series(render({"last_reload": {"ok": False, "time": 5.0, "error": "x"}}))
    assert got == {"pylvs_config_last_reload_successful": {(): 0}}
    # ... unless the director says when it started: the file it started with was good.
    got = series(render({"last_reload": {"ok": False, "time": 5.0, "error": "x"}, "started": 2.0}))
    assert got["pylvs_config_last_reload_success_timestamp_seconds"] == {(): 2.0}


def test_promtool_accepts_the_page(director):
    d, feed = director()
    feed.send([tcp(CLIENT, VIP, CPORT, VPORT, "S")])
    promtool_check(render(d.status()))
    promtool_check(render({"role": "standby", "services": []}))


def test_the_director_serves_its_metrics(director):
    d, feed = director(metrics="127.0.0.1:0")
    feed.send([tcp(CLIENT, VIP, CPORT, VPORT, "S")])
    host, port = d.metrics.address
    page = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=HTTP_TIMEOUT).read().decode()
    got = series(page)
    assert got["pylvs_ipvs_connections_total"] == {(): 1}
    assert "process_start_time_seconds" in got  # prometheus-client's own process collector
    promtool_check(page)


def test_server_binds_at_start_and_closes():
    m = MetricsServer("127.0.0.1:0", lambda: {"role": "active"})
    m.start()
    try:
        host, port = m.address
        assert host == "127.0.0.1" and port > 0
        with pytest.raises(OSError):  # the port is taken: the second start fails, loudly
            MetricsServer(f"127.0.0.1:{port}", dict).start()
        page = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=HTTP_TIMEOUT).read().decode()
        assert series(page)["pylvs_ha_state"] == {("active",): 1, ("standby",): 0}
        # prometheus-client's name[] filter (the collector describes its families for it)
        url = f"http://{host}:{port}/metrics?name[]=pylvs_ha_state&name[]=pylvs_config_reloads_total"
        page = urllib.request.urlopen(url, timeout=HTTP_TIMEOUT).read().decode()
        assert series(page) == {"pylvs_ha_state": {("active",): 1, ("standby",): 0}}
    finally:
        m.close()
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=HTTP_TIMEOUT):
        pass


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9101", ("127.0.0.1", 9101)),
    (":9101", ("0.0.0.0", 9101)),
    ("[::1]:9101", ("::1", 9101)),
    ("[::]:0", ("::", 0)),
    (" 10.0.0.1:65535 ", ("10.0.0.1", 65535)),
])  # fmt: skip
def test_parse_listen(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize(("text", "why"), [
    ("9101", "expected ADDR:PORT"),
    ("127.0.0.1", "expected ADDR:PORT"),
    ("127.0.0.1:", "expected ADDR:PORT"),
    ("", "expected ADDR:PORT"),
    ("::1:9101", "IPv6 address in brackets"),
    ("[127.0.0.1]:9101", "brackets are for IPv6"),
    ("localhost:9101", "'localhost' is not an IP address"),
    ("256.1.1.1:9101", "is not an IP address"),
    ("127.0.0.1:http", "not a number from 0 to 65535"),
    ("127.0.0.1:65536", "not a number from 0 to 65535"),
    ("127.0.0.1:-1", "not a number from 0 to 65535"),
])  # fmt: skip
def test_parse_listen_refuses(text, why):
    with pytest.raises(ValueError, match=why):
        parse_listen(text)
    with pytest.raises(ValueError, match=why):
        MetricsServer(text, dict)
