"""Compile every numba kernel the director runs into numba's on-disk cache, now.

    python -m pylvs.precompile

``make deps`` (and so ``make test`` and ``make demo``) runs it right after installing,
so the first ``pylvs lvs`` loads compiled code instead of compiling for a minute or
more (issue 11: 82 s measured with an empty cache).  The cache lives where numba puts it
for cache=True kernels, in the ``__pycache__`` folders beside the package's sources: one
place, written by whoever installs (root for a system install), and revalidated by
numba against the sources' time stamps, so a changed kernel is compiled once, not at
every start.  A second run only loads (a few seconds).

What runs: a throw-away forwarder for each forwarding method over an lvs.cf with every
scheduler (and a persistent UDP service and a persistent firewall-mark service), a batch
of packets through ``engine.process`` and through the C entry point, a swap, clock
expiry, the lblc collector, the quiesce reset and both halves of connection sync:
each kernel with the argument types the director gives it.
"""

from __future__ import annotations

import sys
import time

from pylvs._native import lib
from pylvs.config import check_text
from pylvs.dataplane import engine as en
from pylvs.dataplane import tables as tb
from pylvs.dataplane.engine_cfunc import BatchArrays
from pylvs.dataplane.forwarder import Forwarder
from pylvs.lab import topology as topo
from pylvs.lab.lvscf import Service, lvs_cf
from pylvs.sched._dispatch import NAMES

# The lab's addressing (nothing here is sent anywhere: the packets only exist in memory).
VIP = topo.VIP
RIPS = ("10.77.2.2", "10.77.2.3")
CLIENT = "10.77.1.51"
FWMARK = 7
BASE_PORT = 8000


def _config(kind: str):
    services = [Service(name=f"s{i}", port=BASE_PORT + i, scheduler=name) for i, name in enumerate(NAMES)]
    services.append(Service(name="udp", port=53, protocol="udp", scheduler="rr", persistent=60, send="x"))
    services.append(Service(name="mark", port=443, scheduler="wlc", fwmark=FWMARK, persistent=300))
    text = lvs_cf(services=services, kind=kind, rips=RIPS)
    r = check_text(text)
    if not r.ok:
        raise RuntimeError("precompile's own lvs.cf does not check: " + "; ".join(map(str, r.diagnostics)))
    return r.config


def _packets() -> list[bytes]:
    from scapy.layers.inet import ICMP, IP, TCP, UDP

    out = []
    for i in range(len(NAMES)):
        port = BASE_PORT + i
        out.append(IP(src=CLIENT, dst=VIP) / TCP(sport=40000 + i, dport=port, flags="S"))
        out.append(IP(src=RIPS[0], dst=CLIENT) / TCP(sport=port, dport=40000 + i, flags="SA"))
        out.append(IP(src=CLIENT, dst=VIP) / TCP(sport=40000 + i, dport=port, flags="FA"))
    out.append(IP(src=CLIENT, dst=VIP) / UDP(sport=5353, dport=53))
    out.append(IP(src=RIPS[0], dst=CLIENT) / ICMP(type=3, code=3) / IP(src=CLIENT, dst=RIPS[0]) / UDP(sport=5353,
                                                                                                     dport=53))
    return [bytes(p) for p in out]


def run(verbose: bool = True) -> float:
    t0 = time.monotonic()
    packets = _packets()
    for kind in ("nat", "direct", "tunnel"):
        config = _config(kind)
        fwd = Forwarder(tb.compile(config), capacity=1024, tunnel_src=1, clock=time.monotonic)
        fwd.warm_up()
        fwd.handle(en.batch_from_packets(packets, marks=[FWMARK] + [0] * (len(packets) - 1)))
        arrays = BatchArrays(len(packets), en.STRIDE_DEFAULT)
        n = arrays.load(packets)
        cfwd = fwd.native()
        with fwd.exclusive():
            lib.pl_engine_batch(cfwd, arrays.c, n, time.monotonic())
        fwd.swap(fwd.compile(config))
        fwd.expire(1024)
        fwd.collect_garbage()
        fwd.reset_counts(0)
        fwd.sync_apply(fwd.sync_collect())
        fwd.tick_estimators()
        fwd.snapshot()
    took = time.monotonic() - t0
    if verbose:
        print(f"pylvs: numba kernels compiled or loaded in {took:.1f} s")
    return took


if __name__ == "__main__":
    run()
    sys.exit(0)
