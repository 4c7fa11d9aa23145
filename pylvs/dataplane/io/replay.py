"""Replay: a pcap or a list of scapy packets through the engine, for tests and teaching.

    from pylvs.dataplane.io.replay import engine_handle, replay, write_pcap
    handle = engine_handle(tables, ct, counters, tunnel_src=ip)   # the director's closure
    outcomes = replay("in.pcap", handle)                            # or a list of packets
    write_pcap(outcomes, "out.pcap")                                # the forwarded packets

The same ``handle(batch) -> engine.Verdicts`` closure the kernel adapters call, so a
capture replayed here gets exactly the decisions and bytes the director would produce
(ARCHITECTURE "A sans-I/O packet core").  From the shell::

    python -m pylvs.dataplane.io.replay -c lvs.cf in.pcap [-o out.pcap]

prints one line per packet (numbered from 1, as Wireshark numbers frames)::

    #3 nat_in 10.0.0.5:40000 -> 10.77.2.11:80 verdict nat

Inputs: scapy packets (IP, or a link layer such as Ether / Linux cooked capture in front
of IP), raw IPv4 ``bytes``, or a pcap path read with scapy's ``rdpcap`` (Ethernet, Linux
cooked or raw-IP link types).  The link header is stripped and everything after it goes to
the engine, which counts what is not IPv4 (``parse_not_ipv4``) as the adapters would.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from scapy.error import Scapy_Exception
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Packet, Raw
from scapy.utils import PcapWriter, rdpcap

from pylvs.dataplane import engine as en

# Link types of pcap files written by write_pcap: DLT_RAW (the packet from the IP header
# on; tcpdump/Wireshark read it as "Raw IP").
LINKTYPE_RAW = 101
IPPROTO_IPIP = 4
IPV4_MIN_HEADER = 20

Handle = Callable[[en.Batch], en.Verdicts]


class Outcome(NamedTuple):
    """What the engine did with input packet ``index`` (0-based)."""

    index: int
    verdict: str  # engine.VERDICT_NAMES
    reason: str  # engine.REASON_NAMES: the counter the packet landed in
    dest_row: int  # the real server's dest row (tables.dest), -1 for none
    output: bytes | None  # the packet as forwarded / passed, None when dropped
    packet: Packet | None  # ``output`` parsed as a scapy IP packet

    @property
    def forwarded(self) -> bool:
        """The director sends this packet (forwarded, or an ICMP error it answers with)."""
        return self.verdict not in ("pass", "drop")


def engine_handle(tables, ct, counters, *, tunnel_src: int = 0,
                  clock: Callable[[], float] = time.monotonic) -> Handle:
    """The director's closure for one worker: ``handle(batch) -> Verdicts`` over fixed
    tables, connection table and counters, ``now`` from ``clock`` (seconds)."""

    def handle(batch: en.Batch) -> en.Verdicts:
        return en.process(batch, clock(), tables, ct, counters, tunnel_src=tunnel_src)

    return handle


def ip_bytes(packet: Packet | bytes | bytearray | memoryview) -> bytes:
    """The bytes from the IP header on: a link header (Ether, cooked capture, ...) and the
    link's padding are stripped; bytes and packets without a link layer are taken as they
    are."""
    if isinstance(packet, (bytes, bytearray, memoryview)):
        return bytes(packet)
    if isinstance(packet, (IP, Raw)):
        return bytes(packet)
    if IP in packet:
        data = bytes(packet[IP])
        total = packet[IP].len
        # Short frames are padded to Ethernet's 60 bytes on the wire: the padding is not
        # part of the IP packet.
        return data[:total] if total is not None and IPV4_MIN_HEADER <= total < len(data) else data
    # A link layer in front of something that is not IPv4 (ARP, IPv6, ...): hand over
    # what follows the link header; the engine counts it as not IPv4.
    return bytes(packet.payload) if packet.payload else bytes(packet)


def read_packets(source: str | os.PathLike | Iterable) -> list[bytes]:
    """A pcap path or an iterable of packets -> the list of IP packets as bytes."""
    if isinstance(source, (str, os.PathLike)):
        source = rdpcap(os.fspath(source))
    return [ip_bytes(p) for p in source]


def replay(packets: str | os.PathLike | Sequence, handle: Handle, *, marks: Sequence[int] | None = None,
           batch: int = 1) -> list[Outcome]:
    """Run ``packets`` (a pcap path, scapy packets or IP bytes) through ``handle`` in
    batches of ``batch`` packets, in order; ``marks`` are their firewall marks."""
    if batch < 1:
        raise ValueError(f"batch={batch}: at least 1 packet per batch")
    data = read_packets(packets)
    if marks is not None and len(marks) != len(data):
        raise ValueError(f"{len(marks)} marks for {len(data)} packets")
    outcomes: list[Outcome] = []
    for start in range(0, len(data), batch):
        chunk = data[start:start + batch]
        b = en.batch_from_packets(chunk, marks=None if marks is None else marks[start:start + batch])
        v = handle(b)
        for i in range(b.n):
            verdict = int(v.verdict[i])
            out = None if verdict == en.V_DROP else en.packet_bytes(b, i)
            outcomes.append(Outcome(start + i, en.VERDICT_NAMES[verdict], en.REASON_NAMES[int(v.reason[i])],
                                    int(v.dest_row[i]), out, None if out is None else IP(out)))
    return outcomes


def write_pcap(outcomes: Iterable[Outcome], path: str | os.PathLike, *, include_pass: bool = False) -> int:
    """Write the packets the director sends (NAT, DR, tunnel, ICMP rejects; with
    ``include_pass`` also those handed back to the kernel) to a raw-IP pcap; returns how
    many were written."""
    keep = [o.output for o in outcomes
            if o.output is not None and (o.forwarded or (include_pass and o.verdict == "pass"))]
    with PcapWriter(os.fspath(path), linktype=LINKTYPE_RAW) as out:
        for p in keep:
            out.write(p)
    return len(keep)


# --- the command line ---------------------------------------------------------------------

def _endpoint(ip: Packet) -> tuple[str, str]:
    """("src[:sport]", "dst[:dport]") of an IP packet, ports where TCP/UDP."""
    l4 = ip.payload
    if isinstance(l4, (TCP, UDP)):
        return f"{ip.src}:{l4.sport}", f"{ip.dst}:{l4.dport}"
    return ip.src, ip.dst


def describe(outcome: Outcome, original: bytes) -> str:
    """One line: ``#N reason src -> dst verdict V`` (N from 1), the packet as it leaves
    (the input when dropped); a tunnelled packet shows the outer then the inner pair."""
    shown = outcome.packet if outcome.packet is not None else IP(original)
    try:
        src, dst = _endpoint(shown)
        extra = ""
        if shown.proto == IPPROTO_IPIP and isinstance(shown.payload, IP):
            isrc, idst = _endpoint(shown.payload)
            extra = f" (ipip {isrc} -> {idst})"
        elif isinstance(shown.payload, ICMP):
            extra = f" (icmp type {shown.payload.type} code {shown.payload.code})"
    except (AttributeError, TypeError, ValueError):  # not a parsable IPv4 packet
        src, dst, extra = "?", "?", f" ({len(original)} bytes)"
    return f"#{outcome.index + 1} {outcome.reason} {src} -> {dst}{extra} verdict {outcome.verdict}"


def main(argv: Sequence[str] | None = None) -> int:
    from pylvs.config import ConfigError, load
    from pylvs.dataplane import conntab
    from pylvs.dataplane import tables as tb

    ap = argparse.ArgumentParser(prog="python -m pylvs.dataplane.io.replay",
                                 description="Replay a pcap through the pylvs engine compiled from an lvs.cf.")
    ap.add_argument("-c", "--config", required=True, help="lvs.cf to compile the virtual services from")
    ap.add_argument("pcap", help="input capture (Ethernet, Linux cooked or raw IP)")
    ap.add_argument("-o", "--output", help="write the forwarded packets to this pcap (raw IP)")
    ap.add_argument("--tunnel-src", help="outer source of tunnelled packets (default: the lvs.cf "
                                         "primary_private, else primary)")
    ap.add_argument("--batch", type=int, default=1, help="packets per engine batch (default 1)")
    ap.add_argument("--capacity", type=int, default=65536, help="connection table capacity")
    args = ap.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:  # its message names the file and lines
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.config}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        captured = rdpcap(args.pcap)
    except (OSError, Scapy_Exception) as exc:
        print(f"{args.pcap}: {exc}", file=sys.stderr)
        return 2
    tables = tb.compile(config)
    ct = en.attach(conntab.create(args.capacity, 1), tables)
    counters = en.new_counters(tables)
    tunnel_src = int(ipaddress.IPv4Address(args.tunnel_src or config.primary_private_address))
    # The engine's clock follows the capture: each batch runs at its first packet's time,
    # so connection timeouts and persistence behave as they did on the wire.
    times = [float(p.time) for p in captured]
    position = [0]

    def clock() -> float:
        return times[position[0]] if position[0] < len(times) else time.time()

    inner = engine_handle(tables, ct, counters, tunnel_src=tunnel_src, clock=clock)

    def handle(batch: en.Batch) -> en.Verdicts:
        v = inner(batch)
        position[0] += batch.n
        return v

    data = read_packets(captured)
    outcomes = replay(data, handle, batch=args.batch)
    for o in outcomes:
        print(describe(o, data[o.index]))
    counts = en.reason_counts(counters)
    print(f"# {len(outcomes)} packets: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.output:
        n = write_pcap(outcomes, args.output)
        print(f"# wrote {n} forwarded packets to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
