"""Forwarding benchmark (`make bench-forward`, issue 5): pylvs against the kernel, nftables
and HAProxy on the same machine, in the network-namespace lab.

    sudo .venv/bin/python -m bench.forward                      # 3 runs x 5 s, every config
    sudo .venv/bin/python -m bench.forward --quick --configs A,B,C   # smoke test, ~1 min
    python -m bench.forward [--runs 3] [--dur 5] [--configs A,B,C,D1,D2,D3,D3W,D3F,D4,D4B,D4W,DR,DRL,DRX,DRXB]
                            [--metrics cps,rps,udp,bulk,lat] [--out docs/bench-forward-latest.md]
                            [--quick] [--python PY] [--ready-timeout 60] [--keep-work]

It follows the team's reference harness, ../shared/lab/ (anchors.sh, summarize.py,
RESULTS.md: read its caveats before quoting a number), on pylvs.lab topologies
(docs/lab.md): a `nat` lab with one client, dir1 and three real servers, and for DR,
DRL, DRX and DRXB a second lab of kind `direct` (and for D4W a third, `nat` with two receive
queues on the director's interfaces).

Configurations (brought up in dir1, measured, taken down; the same order in every run):

| id | dir1 does | client targets |
|---|---|---|
| A  | plain kernel forwarding, empty ruleset: the physical limit | rs1 10.77.2.11 |
| B  | nftables `nat prerouting` DNAT `numgen inc mod 3` (iperf3: `jhash ip saddr`) | VIP 10.77.1.100 |
| C  | HAProxy `mode tcp`, roundrobin (iperf3: balance source), `-db`, maxconn 8000 | VIP |
| D1 | `python -m pylvs lvs -c FILE --nodaemon --io nfqueue` (per-packet NFQUEUE) | VIP |
| D2 | the same with `--io nfq-native` (batched native NFQUEUE, the engine called from Python) | VIP |
| D3 | the same with `--io nfq-loop` (the whole loop in C, the engine as a cfunc) | VIP |
| D3W | the same with `--workers 2` (two loops, two queues, one connection table) | VIP |
| D3F | D3, HTTP a firewall-mark service (a MARK rule in dir1): replies take the classify pass | VIP |
| D4 | the same with `--io afxdp` (the C loop on AF_XDP sockets, an XDP program in front) | VIP |
| D4B | the same with `--busy-poll 200` (the loop spins 200 us before it sleeps) | VIP |
| D4W | D4 with `--workers 2`, on a third lab whose director veths have 2 receive queues | VIP |
| DR | the same with `--io afpacket` (the C loop over an AF_PACKET tap), `network = direct`, on the direct lab | VIP |
| DRL | the same with `--io nfq-loop`, `network = direct`, on the direct lab | VIP |
| DRX | the same with `--io afxdp`, `network = direct`, on the direct lab | VIP |
| DRXB | the same with `--busy-poll 200` | VIP |

For A, B and C the harness adds the NAT router address 10.77.2.254 (the nat real servers'
gateway) to dir1's eth1, and for C the VIP on dir1's lo; it removes them again.  For
D1-DRXB it writes an lvs.cf (bench/forward/confgen.py: VIP 10.77.1.100, real servers
10.77.2.11-13, scheduler rr, services http :8080, iperf3 :5201 persistent, udp :9100),
checks it with pylvs.config.check_text, starts pylvs in dir1 and waits (bounded,
--ready-timeout) until the VIP answers HTTP.  A configuration that does not come up is
reported as "not run: <the line that says why>" and the others still run.  After pylvs
stops (SIGTERM, SIGKILL after 10 s), rules or addresses it left in dir1 are noted in the
report and removed.

Services on every real server, beside the lab's own (HTTP :80, UDP echo :9000, left
alone): nginx on :8080 (2 workers, ~100-byte object), `iperf3 -s` on :5201, and during the
UDP measurement a `udp_sink` on :9100.  src/udp_blast.c and src/udp_sink.c are copied from
../shared/lab/src and built with `cc -O2` into a temporary directory at each start.

Metrics (as the reference; each generator under `timeout`, the client in its namespace):

| key | what | tool |
|---|---|---|
| cps | new TCP connections/s, one GET each | `wrk -t1 -c32 -H 'Connection: close'` |
| rps | keep-alive HTTP requests/s | `wrk -t1 -c64` |
| udp | 64-byte UDP datagrams/s delivered (sum of the 3 sinks) | `udp_blast` 8 source ports, sendmmsg x64 |
| bulk | one TCP stream, receiver Gbit/s | `iperf3 -t DUR -J` |
| lat | HTTP round trip p50 / p99 over one keep-alive connection | `wrk -t1 -c1 --latency` |

Per measurement also: whole-box busy cores (/proc/stat deltas) and the forwarding
process tree's CPU (utime+stime of HAProxy or pylvs and its children, /proc/PID/stat).
The report (bench/forward/summary.py) gives median [min–max] over runs with the ratio
against A of the same run, the CPU cost per unit, the issue's targets table with met /
not met for each pylvs configuration, the command line and the tool versions; it is
printed and written to --out.

Safety: traffic only flows between the lab's namespaces; nothing is configured in the
root namespace; every process is ended by PID; the labs are destroyed in a `finally`
(and by pylvs.lab's own exit/signal handlers).

Modules: cli (arguments, main), harness (labs, configurations, measurements), confgen
(nginx.conf, nft ruleset, haproxy.cfg, lvs.cf), parsers (generator outputs, /proc),
summary (medians, ratios, targets, markdown).  Pure parts are tested in
tests/unit/test_bench_forward.py.
"""
