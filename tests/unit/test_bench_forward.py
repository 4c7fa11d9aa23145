"""The pure parts of the forwarding benchmark (bench/forward): argument parsing, output
parsers, generated configuration files, medians / ratios / costs / targets and the report.
No lab, no root: the benchmark itself runs with `make bench-forward`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.forward import cli, confgen, parsers, summary  # noqa: E402
from bench.forward.summary import Sample  # noqa: E402
from pylvs.config import check_text  # noqa: E402

RIPS = ["10.77.2.11", "10.77.2.12", "10.77.2.13"]
VIP = "10.77.1.100"

# --- arguments ----------------------------------------------------------------------------


def test_defaults():
    o = cli.parse_args([])
    assert (o.runs, o.dur) == (cli.DEFAULT_RUNS, cli.DEFAULT_DUR)
    assert o.configs == ["A", "B", "C", "D1", "D2", "D3", "D3W", "D3F", "D4", "D4B", "D4W", "DR", "DRL", "DRX", "DRXB"]
    assert o.metrics == ["cps", "rps", "udp", "bulk", "lat"]
    assert o.metric_keys == ["cps", "rps", "udp", "bulk", "lat_p50", "lat_p99"]
    assert o.out == Path(cli.DEFAULT_OUT)
    assert o.command == "python -m bench.forward"


def test_quick_and_explicit_values():
    o = cli.parse_args(["--quick"])
    assert (o.runs, o.dur, o.quick) == (1, 2, True)
    o = cli.parse_args(["--quick", "--runs", "2", "--dur", "3"])
    assert (o.runs, o.dur) == (2, 3)


def test_lists_are_deduplicated_and_put_in_canonical_order():
    o = cli.parse_args(["--configs", "C,A,C,DR", "--metrics", "lat,cps"])
    assert o.configs == ["A", "C", "DR"]
    assert o.metrics == ["cps", "lat"]


def test_out_dash_prints_only_and_command_is_quoted():
    o = cli.parse_args(["--out", "-", "--configs", "A,B"])
    assert o.out is None
    assert o.command == "python -m bench.forward --out - --configs A,B"


@pytest.mark.parametrize("argv", [
    ["--configs", "A,X"], ["--configs", ","], ["--metrics", "pps"], ["--runs", "0"],
    ["--runs", "x"], ["--dur", "0"], ["--dur", "1.5"], ["--dur", str(cli.MAX_DUR + 1)],
])
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


# --- parsers ------------------------------------------------------------------------------

WRK_LATENCY = """Running 5s test @ http://10.77.2.11:8080/
  1 threads and 1 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    45.10us   12.00us   1.20ms   95.00%
    Req/Sec    21.1k     1.0k    22.0k    80.00%
  Latency Distribution
     50%   43.00us
     75%   46.00us
     90%   50.00us
     99%    1.20ms
  105000 requests in 5.00s, 30.00MB read
Requests/sec:  20999.50
Transfer/sec:      6.00MB
"""

WRK_ERRORS = """Running 5s test @ http://10.77.1.100:8080/
  105000 requests in 5.00s, 30.00MB read
  Socket errors: connect 3, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  13211.45
"""


def test_wrk_latency_units():
    r = parsers.parse_wrk(WRK_LATENCY)
    assert r.rps == pytest.approx(20999.5)
    assert r.p50_us == pytest.approx(43.0)
    assert r.p99_us == pytest.approx(1200.0)
    assert r.problem == ""


def test_wrk_errors_are_counted():
    r = parsers.parse_wrk(WRK_ERRORS)
    assert r.rps == pytest.approx(13211.45)
    assert (r.socket_errors, r.non_2xx) == (6, 7)
    assert r.problem == "6 socket errors, 7 non-2xx responses"
    assert parsers.parse_wrk("unable to connect to 10.77.1.100:8080 Connection refused").rps is None


@pytest.mark.parametrize("text,us", [("43.00us", 43), ("1.5ms", 1500), ("2s", 2e6), ("abc", None)])
def test_duration_us(text, us):
    assert parsers.duration_us(text) == us


def test_iperf3_json():
    ok = json.dumps({"end": {"sum_received": {"bits_per_second": 24.27e9},
                             "sum_sent": {"retransmits": 12}}})
    assert parsers.parse_iperf3(ok) == (pytest.approx(24.27), 12, "")
    assert parsers.parse_iperf3(json.dumps({"error": "unable to connect to server"})) == (
        None, None, "iperf3: unable to connect to server")
    gbps, _, err = parsers.parse_iperf3("iperf3: error - timeout\n")
    assert gbps is None and err == "iperf3: iperf3: error - timeout"
    assert parsers.parse_iperf3("{}")[2] == "iperf3: no end.sum_received in its JSON"


def test_udp_tool_lines():
    assert parsers.parse_blast("sent=364288 secs=2.000 pps=182144 errors=0\n") == (364288, 2.0)
    assert parsers.parse_blast("") is None
    assert parsers.parse_sink("recv=121000 bytes=7744000\n") == 121000
    assert parsers.parse_sink("bind: Address already in use") is None


def test_cpu_counters():
    before = parsers.cpu_totals("cpu  100 0 50 1000 10 0 50 0 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    after = parsers.cpu_totals("cpu  200 0 100 1050 10 0 100 0 0 0\n")
    assert before == (200, 1210) and after == (400, 1460)
    assert parsers.busy_cores(before, after, 2) == pytest.approx(2 * 200 / 250)
    assert parsers.busy_cores(before, before, 2) is None
    with pytest.raises(ValueError):
        parsers.cpu_totals("intr 1 2 3\n")


def test_pid_stat_with_awkward_comm():
    fields = ["S", "77"] + ["0"] * 9 + ["120", "30"] + ["0"] * 30
    stat = "4242 (py) thon (x)) " + " ".join(fields)
    assert parsers.pid_stat_fields(stat) == (77, 150, 30)


def test_error_line():
    assert parsers.error_line("\n  pylvs: error: argument --io: invalid choice\nusage...\n") == (
        "pylvs: error: argument --io: invalid choice")
    tb = "Traceback (most recent call last):\n  File \"x\", line 1\nOSError: [Errno 1] Operation not permitted\n"
    assert parsers.error_line(tb) == "OSError: [Errno 1] Operation not permitted"
    assert parsers.error_line("") == "no output"
    assert parsers.error_line("2026-11-22 14:19:45,816 lvs[4649]: cannot bind queue 0\n") == (
        "lvs[4649]: cannot bind queue 0")
    assert parsers.strip_log_prefix("lvs[1]: started") == "lvs[1]: started"


# --- generated files ------------------------------------------------------------------------

@pytest.mark.parametrize("network", ["nat", "direct"])
def test_lvs_cf_is_valid_for_pylvs(network):
    text = confgen.lvs_cf(network, VIP, RIPS, primary="10.77.1.1", primary_private="10.77.2.1",
                          nat_router="10.77.2.254" if network == "nat" else None)
    result = check_text(text, "bench.cf")
    assert result.ok, result.diagnostics
    assert not [d for d in result.diagnostics if "warning" in str(d).lower()]
    cfg = result.config
    assert cfg.network == network
    vs = {v.name: v for v in cfg.virtuals}
    assert {v.port for v in vs.values()} == {confgen.HTTP_PORT, confgen.IPERF_PORT, confgen.UDP_PORT}
    assert vs["iperf"].persistent == confgen.PERSIST_SECONDS
    assert vs["udp"].protocol == "udp"
    assert all(len(v.servers) == 3 for v in vs.values())


def test_d3f_bundles_http_by_the_mark_its_rule_sets():
    """D3F: the HTTP service matches firewall mark 80 (its port stays the health check's),
    and the MARK rule the harness adds marks exactly its port on the VIP."""
    text = confgen.lvs_cf("nat", VIP, RIPS, primary="10.77.1.1", primary_private="10.77.2.1",
                          nat_router="10.77.2.254", http_fwmark=confgen.HTTP_FWMARK)
    result = check_text(text, "bench.cf")
    assert result.ok, result.diagnostics
    vs = {v.name: v for v in result.config.virtuals}
    assert vs["http"].fwmark == confgen.HTTP_FWMARK and vs["iperf"].fwmark == 0
    rule = confgen.mark_rule(VIP)
    assert rule == ["PREROUTING", "-p", "tcp", "-d", f"{VIP}/32", "--dport", str(confgen.HTTP_PORT), "-j", "MARK",
                    "--set-mark", "80"]


def test_lvs_cf_needs_a_nat_router_for_nat():
    with pytest.raises(ValueError):
        confgen.lvs_cf("nat", VIP, RIPS, primary="10.77.1.1", primary_private="10.77.2.1")
    with pytest.raises(ValueError):
        confgen.lvs_cf("tunnel", VIP, RIPS, primary="10.77.1.1", primary_private="10.77.2.1")


def test_nft_and_haproxy_texts():
    nft = confgen.nft_dnat(VIP, RIPS)
    assert "numgen inc mod 3 map { 0 : 10.77.2.11, 1 : 10.77.2.12, 2 : 10.77.2.13 }" in nft
    assert f"tcp dport {confgen.IPERF_PORT} dnat to jhash ip saddr mod 3" in nft
    assert nft.startswith(f"table ip {confgen.NFT_TABLE} ")
    ha = confgen.haproxy_cfg(VIP, RIPS)
    assert f"bind {VIP}:{confgen.HTTP_PORT}" in ha and "balance roundrobin" in ha
    assert ha.count(f":{confgen.IPERF_PORT}\n") == 4 and "daemon" not in ha  # bind + 3 servers
    assert "worker_processes 2;" in confgen.nginx_conf("/p", "/w") and "daemon off;" in confgen.nginx_conf("/p", "/w")


# --- summary maths ----------------------------------------------------------------------------

def _runs(cfg, metric, values, busy=None, fwd=None):
    return [Sample(i + 1, cfg, metric, v, busy[i] if busy else None, fwd[i] if fwd else None)
            for i, v in enumerate(values)]


def test_median_range_and_same_run_ratio():
    samples = _runs("A", "cps", [100, 200, 400]) + _runs("B", "cps", [90, 100, 300])
    cells = summary.summarize(samples)
    b = cells[("B", "cps")]
    assert (b.median, b.lo, b.hi, b.runs) == (100, 90, 300, 3)
    # per-run ratios 0.9, 0.5, 0.75 -> median 0.75 (not 100/200)
    assert b.ratio == pytest.approx(0.75)
    assert cells[("A", "cps")].ratio == pytest.approx(1.0)


def test_ratio_skips_runs_without_a():
    samples = _runs("A", "udp", [100, None]) + _runs("D2", "udp", [110, 50])
    assert summary.summarize(samples)[("D2", "udp")].ratio == pytest.approx(1.1)


def test_latency_added_is_median_of_differences():
    samples = _runs("A", "lat_p50", [43, 50, 40]) + _runs("D2", "lat_p50", [84, 60, 67])
    c = summary.summarize(samples)[("D2", "lat_p50")]
    assert c.added == pytest.approx(27)  # differences 41, 10, 27
    assert c.box_cost is None


def test_cost_per_unit():
    samples = (_runs("A", "cps", [10000, 10000], busy=[1.5, 1.5])
               + _runs("C", "cps", [8000, 8000], busy=[2.0, 2.0], fwd=[80.0, 80.0])
               + _runs("A", "bulk", [20.0], busy=[2.0]))
    cells = summary.summarize(samples)
    a, c = cells[("A", "cps")], cells[("C", "cps")]
    assert a.box_cost == pytest.approx(150.0) and a.fwd_pct is None and a.fwd_cost is None
    assert c.box_cost == pytest.approx(250.0)
    assert c.box_cost_ratio == pytest.approx(250 / 150)
    assert c.fwd_pct == pytest.approx(80) and c.fwd_cost == pytest.approx(100.0)
    assert cells[("A", "bulk")].box_cost == pytest.approx(0.1)  # cores per Gbit/s


def test_the_forwarders_kernel_share_is_reported():
    samples = (_runs("A", "cps", [10000, 10000], busy=[1.5, 1.5])
               + [Sample(r, "D3", "cps", 8000, 2.0, 80.0, fwd_sys_pct=s) for r, s in ((1, 50.0), (2, 60.0))])
    c = summary.summarize(samples)[("D3", "cps")]
    assert c.fwd_pct == pytest.approx(80) and c.fwd_sys_pct == pytest.approx(55)
    text = summary.render(samples, ["A", "D3"], ["cps"], {}, runs=2, dur=5, command="python -m bench.forward")
    assert "80 % (sys 55) · 100.00 us" in text


def test_all_failed_is_none_with_notes():
    samples = [Sample(1, "C", "udp", None, note="no UDP proxy"), Sample(2, "C", "udp", None, note="no UDP proxy")]
    assert summary.summarize(samples)[("C", "udp")] is None
    assert summary.notes_of(samples, "C", "udp") == ["no UDP proxy"]


@pytest.mark.parametrize("metric,values,expected", [
    ("cps", [100, 85], "0.85 met"),
    ("cps", [100, 84.4], "0.84 not met"),
    ("udp", [100, 104], "1.04 met"),
    ("udp", [100, 99], "0.99 not met"),
    ("lat_p50", [43, 73], "+30 us met"),
    ("lat_p50", [43, 74], "+31 us not met"),
    ("lat_p99", [61, 141], "+80 us met"),
    ("lat_p99", [61, 142], "+81 us not met"),
])
def test_targets(metric, values, expected):
    samples = _runs("A", metric, [values[0]]) + _runs("D2", metric, [values[1]])
    cells = summary.summarize(samples)
    target = next(t for t in summary.TARGETS if t.metric == metric)
    assert summary.target_cell(target, cells[("D2", metric)]) == expected


def test_target_cell_not_run_and_not_measured():
    t = summary.TARGETS[0]
    assert summary.target_cell(t, None, "not run: x") == "not run"
    assert summary.target_cell(t, None) == "not measured"
    assert summary.target_met(t, None) is None


def test_targets_follow_the_issue():
    goals = {t.metric: (t.kind, t.threshold) for t in summary.TARGETS}
    assert goals == {"cps": ("ratio_ge", 0.85), "udp": ("ratio_ge", 1.0), "rps": ("ratio_ge", 0.95),
                     "bulk": ("ratio_ge", 0.70), "lat_p50": ("added_le", 30.0), "lat_p99": ("added_le", 80.0)}


def test_headline_cells():
    samples = _runs("A", "cps", [13101, 13211, 13464]) + _runs("B", "cps", [10240, 10260, 10285])
    samples += _runs("A", "lat_p50", [43, 43, 43]) + _runs("B", "lat_p50", [47, 47, 47])
    cells = summary.summarize(samples)
    assert summary.headline_cell("cps", cells[("A", "cps")], "A") == "13,211 [13,101–13,464]"
    assert summary.headline_cell("cps", cells[("B", "cps")], "B") == "10,260 [10,240–10,285] · **0.78**"
    assert summary.headline_cell("lat_p50", cells[("B", "lat_p50")], "B") == "47 (+4)"
    assert summary.headline_cell("udp", None, "C", ["no UDP proxy"]) == "n/a (no UDP proxy)"
    assert summary.fmt_value("bulk", 24.271) == "24.27"


def test_render_report():
    samples = (_runs("A", "cps", [10000], busy=[1.5]) + _runs("D1", "cps", [9000], busy=[1.8], fwd=[90.0])
               + [Sample(1, "C", "cps", None, note="wrk exit 124: timeout")])
    text = summary.render(samples, ["A", "C", "D1", "D2"], ["cps"], {"D2": "not run: no such --io"},
                          runs=1, dur=2, command="python -m bench.forward --quick", env={"wrk": "4.1.0"},
                          caveats=["smoke test"])
    assert ("| **D2** pylvs NAT, batched native NFQUEUE, engine called from Python (`--io nfq-native`) -> VIP "
            "| not run: no such --io |") in text
    assert "9,000 · **0.90**" in text
    assert "| new TCP connections/s | >= 0.85 | 0.78 / 0.64 / 0.80 | n/a | 0.90 met | not run |" in text
    assert "| keep-alive requests/s | >= 0.95 |" in text and "not measured" in text
    assert "- D2: not run: no such --io" in text
    assert "python -m bench.forward --quick" in text and "- wrk: 4.1.0" in text
    assert "- run 1 C cps: wrk exit 124: timeout" in text


def test_xdp_configs_have_their_own_p50_goal():
    t = next(t for t in summary.TARGETS if t.metric == "lat_p50")
    assert t.threshold_for("D3") == 30 and t.threshold_for("D4") == t.threshold_for("DRXB") == 25
    assert "AF_XDP <= 25 us" in t.goal
