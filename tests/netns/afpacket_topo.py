"""Helpers of tests/netns/test_io_afpacket.py: the lvs.cf texts for the lab, the netdev
ingress drop rule, and (run as a script inside the director's namespace) a small director
around AfPacketLoop (the C loop over an AF_PACKET tap).

    python tests/netns/afpacket_topo.py -c lvs.cf --in eth0 --out eth1 [--tunnel-src IP]
                                        [--neigh IP=MAC ...] [--no-filter]

prints ``ready`` once the engine is compiled and the socket is open, forwards until
SIGTERM, then prints one JSON line: the adapter's stats, the engine's reason counters and
the CPU seconds the process used.  Neighbours: ``--neigh`` entries, else the lab's
deterministic MACs (10.77.S.H -> 02:77:00:00:SS:HH, pylvs.lab.topology).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import socket
import sys
import threading
import time

LAB_NET = ipaddress.IPv4Network("10.77.0.0/16")
NO_SUCH_IFINDEX = 0x7FFFFFF0

def ingress_drop_commands(table: str, dev: str, matches: list[str]) -> list[list[str]]:
    """nft commands dropping the kernel's copy of service traffic at netdev ingress (what
    netctl installs for AF_PACKET directors; AF_PACKET taps see the frames before it).
    ``matches``: one nft match per rule, e.g. ``"ip daddr 10.77.1.100 tcp dport 80"``."""
    cmds = [["nft", "add", "table", "netdev", table],
            ["nft", "add", "chain", "netdev", table, "in",
             f"{{ type filter hook ingress device {dev} priority 0; }}"]]
    for m in matches:
        cmds.append(["nft", "add", "rule", "netdev", table, "in", *m.split(), "drop"])
    return cmds


def lab_mac(ip: int) -> bytes | None:
    addr = ipaddress.IPv4Address(ip)
    if addr not in LAB_NET:
        return None
    return bytes([0x02, 0x77, 0, 0]) + addr.packed[2:]


def frame_sender_probe(ifname: str, frames: list[bytes]) -> dict:
    """Run inside a namespace (``lab.call``): FrameSender.send for the first frame,
    send_batch for the rest, one send to an interface that does not exist."""
    from pylvs.dataplane.io.afpacket import FrameSender

    index = socket.if_nametoindex(ifname)
    with FrameSender() as sender:
        first = sender.send(index, frames[0])
        sent, errors = sender.send_batch([(index, memoryview(f)) for f in frames[1:]])
        missing = sender.send(NO_SUCH_IFINDEX, frames[0])
        return {"first": first, "sent": sent, "errors": errors, "missing": missing,
                "mac": sender.mac(index).hex(":"), "mtu": sender.mtu(index)}


def dr_sender_probe(ifname: str, packets: list[bytes], dst_mac: str) -> dict:
    """Run inside a namespace: the packets as one engine batch, all handed to DrSender as
    V_DR rows (row 0 unresolvable), as an NFQUEUE adapter's on_dr would."""
    import numpy as np

    from pylvs.dataplane import engine as en
    from pylvs.dataplane.io.afpacket import DrSender

    index = socket.if_nametoindex(ifname)
    with open(f"/sys/class/net/{ifname}/address") as f:
        own = bytes.fromhex(f.read().strip().replace(":", ""))
    mac = bytes.fromhex(dst_mac.replace(":", ""))
    dr = DrSender(lambda row, dst: None if row == 0 else (index, own, mac))
    batch = en.batch_from_packets(packets)
    dr(batch, np.arange(batch.n), np.arange(batch.n, dtype=np.int64))
    dr.close()
    return dr.stats


def main(argv: list[str] | None = None) -> int:
    from pylvs.config import load
    from pylvs.dataplane import engine as en
    from pylvs.dataplane import tables as tb
    from pylvs.dataplane.forwarder import Forwarder, dest_addresses
    from pylvs.dataplane.io.afpacket import AfPacketLoop

    ap = argparse.ArgumentParser()
    ap.add_argument("-c", "--config", required=True)
    ap.add_argument("--in", dest="in_if", default="eth0")
    ap.add_argument("--out", dest="out_if", default="eth1")
    ap.add_argument("--tunnel-src", default=None)
    ap.add_argument("--neigh", action="append", default=[], help="IP=MAC")
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--no-filter", action="store_true", help="no BPF VIP filter: the C receive sorts frames")
    args = ap.parse_args(argv)

    config = load(args.config)
    tunnel_src = int(ipaddress.IPv4Address(args.tunnel_src or config.primary_private_address))
    fwd = Forwarder(tb.compile(config), capacity=1 << 16, tunnel_src=tunnel_src, clock=time.monotonic)
    fwd.warm_up()
    neigh = {}
    for item in args.neigh:
        ip, _, mac = item.partition("=")
        neigh[int(ipaddress.IPv4Address(ip))] = bytes.fromhex(mac.replace(":", ""))
    out_index = socket.if_nametoindex(args.out_if)
    with open(f"/sys/class/net/{args.out_if}/address") as f:
        out_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    with open(f"/sys/class/net/{args.out_if}/mtu") as f:
        out_mtu = int(f.read())
    # On-link real servers: the next hop is the RIP itself (DR, and TUN in the lab).
    hops = {}
    for rip in dest_addresses(fwd.tables).tolist():
        mac = neigh.get(rip) or lab_mac(rip)
        if mac is not None:
            hops[rip] = (out_index, out_mtu, out_mac, mac)
    fwd.set_next_hops(hops)

    vips = {int(v.address.ip) for v in config.virtuals if v.address is not None}
    stop = threading.Event()
    io = AfPacketLoop(args.in_if, fwd, rows=args.rows, vips=None if args.no_filter else vips)
    cpu0, wall0 = time.process_time(), time.monotonic()

    def report(*_: object) -> None:
        print(json.dumps({"io": io.stats(), "reasons": en.reason_counts(fwd.counters),
                          "cpu": time.process_time() - cpu0, "wall": time.monotonic() - wall0}), flush=True)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, report)  # a snapshot while running
    print("ready", flush=True)
    try:
        io.run(stop)
    finally:
        io.close()
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
