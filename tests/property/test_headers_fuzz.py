"""The header parser never raises and never reads outside a row, whatever the bytes;
on valid packets its fields equal scapy's."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from pylvs.dataplane import headers as h

STRIDE = 128


@settings(max_examples=300, deadline=None)  # the first call compiles the kernel
@given(st.lists(st.tuples(st.binary(max_size=STRIDE), st.integers(0, 2 * STRIDE), st.integers(0, 2 * STRIDE)),
                min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_random_bytes_never_raise_and_only_the_window_is_read(rows, seed):
    """Fields depend only on row i's bytes in [off, off + len): scrambling every other
    byte of the batch (the rest of the row, and all other rows) changes nothing."""
    n = len(rows)
    buf = np.zeros((n, STRIDE), dtype=np.uint8)
    for i, (data, _, _) in enumerate(rows):
        buf[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)
    off = np.array([o for _, o, _ in rows], dtype=np.uint32)
    lens = np.array([ln for _, _, ln in rows], dtype=np.uint32)

    def run(b):
        fields = h.new_fields(n)
        counts = np.zeros(len(h.REASON_NAMES), dtype=np.int64)
        h.parse_batch(b, off, lens, fields, counts)
        assert counts.sum() == n
        return fields

    rng = np.random.default_rng(seed)  # uniform bytes: hypothesis' own draws lean to zeros
    first = run(buf)
    assert set(first[:, h.F_REASON].tolist()) <= set(range(len(h.REASON_NAMES)))
    for i in range(n):
        scrambled = rng.integers(0, 256, size=buf.shape, dtype=np.uint8)
        lo = min(int(off[i]), STRIDE)
        hi = min(int(off[i]) + int(lens[i]), STRIDE)
        scrambled[i, lo:hi] = buf[i, lo:hi]
        again = run(scrambled)
        assert (again[i] == first[i]).all(), f"row {i} read bytes outside [{lo}, {hi})"


ports = st.integers(0, 65535)
addrs = st.integers(0, 2**32 - 1)


@settings(max_examples=200, deadline=None)
@given(addrs, addrs, ports, ports, st.sampled_from(["TCP", "UDP"]), st.integers(0, 10), st.binary(max_size=40),
       st.integers(0, 0xFF))
def test_fields_equal_scapy(src, dst, sport, dport, proto, opt_words, payload, flags):
    to_ip = lambda a: ".".join(str(b) for b in a.to_bytes(4, "big"))  # noqa: E731
    l4 = TCP(sport=sport, dport=dport, flags=flags) if proto == "TCP" else UDP(sport=sport, dport=dport)
    pkt = bytes(IP(src=to_ip(src), dst=to_ip(dst), options=b"\x01" * (4 * opt_words)) / l4 / payload)
    buf = np.zeros((1, 256), dtype=np.uint8)
    buf[0, 64 : 64 + len(pkt)] = np.frombuffer(pkt, dtype=np.uint8)
    fields = h.new_fields(1)
    counts = np.zeros(len(h.REASON_NAMES), dtype=np.int64)
    h.parse_batch(buf, np.array([64], np.uint32), np.array([len(pkt)], np.uint32), fields, counts)
    parsed = IP(pkt)
    f = fields[0]
    assert f[h.F_REASON] == h.R_OK
    assert (f[h.F_SADDR], f[h.F_DADDR]) == (src, dst)
    assert (f[h.F_SPORT], f[h.F_DPORT]) == (parsed.sport, parsed.dport)
    assert f[h.F_IHL] == parsed.ihl * 4 and f[h.F_TOTAL] == parsed.len
    assert f[h.F_TCP_FLAGS] == (int(parsed[TCP].flags) if proto == "TCP" else -1)
