"""Fuzzing the batch packet rewrite (csrc/rewrite.c), and NAT/ICMP/IPIP against scapy.

Robustness: random bytes and mangled valid packets (cut short, wrong lengths, odd IHL,
random fragment fields, flipped bytes), at random offsets and claimed lengths, with
random ops, in batches of several rows.  Every row starts out filled with a
position-dependent canary; afterwards only the bytes a successful op may write
(the packet itself, and for a tunnel the 20 bytes before it) may differ, a failed op
leaves its row, offset and length exactly as they were, and every result is a known
code.  Checksums a rewrite touches stay exactly as valid (or invalid) as they were.

Correctness: NAT in/out of random valid TCP/UDP packets, ICMP error translation of
random quoted packets and IPIP encapsulation equal scapy's from-scratch builds.
"""

from __future__ import annotations

import struct

import numpy as np
from hypothesis import event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from pylvs.dataplane import rewrite as rw

STRIDE = 256
MAX_PACKET = STRIDE - rw.HEADROOM

addresses = st.integers(0, 2**32 - 1)
ports = st.integers(0, 65535)
dotted = addresses.map(lambda a: ".".join(str(b) for b in a.to_bytes(4, "big")))
payloads = st.binary(max_size=60)
ip_options = st.integers(0, 10).map(lambda words: b"\x01" * (words * 4))


def ip2int(addr: str) -> int:
    return struct.unpack("!I", bytes(int(b) for b in addr.split(".")))[0]


# --- generators ----------------------------------------------------------------------
@st.composite
def ip_layers(draw, proto: int | None = None) -> IP:
    fields = {
        "src": draw(dotted), "dst": draw(dotted), "ttl": draw(st.integers(1, 255)), "id": draw(ports),
        "tos": draw(st.integers(0, 255)), "flags": draw(st.sampled_from([0, "DF"])), "options": draw(ip_options),
    }  # fmt: skip
    if proto is not None:
        fields["proto"] = proto
    return IP(**fields)


@st.composite
def l4_segments(draw):
    if draw(st.booleans()):
        return TCP(sport=draw(ports), dport=draw(ports), seq=draw(addresses), ack=draw(addresses),
                   flags=draw(st.integers(0, 0xFF)), window=draw(ports))  # fmt: skip
    chksum = draw(st.sampled_from([None, None, 0]))  # sometimes "no checksum"
    return UDP(sport=draw(ports), dport=draw(ports), chksum=chksum)


@st.composite
def tcp_udp_packets(draw) -> IP:
    return draw(ip_layers()) / draw(l4_segments()) / draw(payloads)


@st.composite
def icmp_errors(draw) -> bytes:
    quoted = bytes(draw(tcp_udp_packets()))
    ihl = (quoted[0] & 0x0F) * 4
    near_edges = st.sampled_from([ihl - 1, ihl, ihl + 2, ihl + 3, ihl + 4, ihl + 7, ihl + 8, ihl + 17, ihl + 18])
    cut = draw(st.one_of(st.integers(ihl + 4, len(quoted)), near_edges, st.integers(0, len(quoted))))
    outer = draw(ip_layers())
    outer.flags = 0
    icmp = ICMP(type=draw(st.sampled_from([3, 4, 11, 3, 4, 11, 0, 5, 12])), code=draw(st.integers(0, 15)))
    return bytes(outer / icmp / Raw(quoted[:cut]))


def _mangle(draw, raw: bytes) -> bytes:
    pkt = bytearray(raw)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        what = draw(st.sampled_from(["cut", "cut_total", "total", "ihl", "version", "frag", "proto", "byte"]))
        if what in ("cut", "cut_total"):
            del pkt[draw(st.integers(0, len(pkt))) :]
            if what == "cut_total" and len(pkt) >= 4:  # a short datagram that says so
                pkt[2:4] = struct.pack("!H", len(pkt))
        elif len(pkt) < 20:
            continue
        elif what == "total":
            pkt[2:4] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        elif what == "ihl":
            pkt[0] = (pkt[0] & 0xF0) | draw(st.integers(0, 15))
        elif what == "version":
            pkt[0] = (draw(st.integers(0, 15)) << 4) | (pkt[0] & 0x0F)
        elif what == "frag":
            pkt[6:8] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))
        elif what == "proto":
            pkt[9] = draw(st.sampled_from([1, 4, 6, 17, draw(st.integers(0, 255))]))
        else:
            at = draw(st.integers(0, len(pkt) - 1))
            pkt[at] = draw(st.integers(0, 255))
    return bytes(pkt)


NAT_KINDS = [rw.OP_NAT_IN, rw.OP_NAT_OUT]
ICMP_KINDS = [rw.OP_ICMP_NAT_IN, rw.OP_ICMP_NAT_OUT]
ANY_KIND = list(range(rw.OP_COUNT)) + [rw.OP_COUNT, 255]  # the last two are not ops


@st.composite
def fuzz_rows(draw) -> tuple[bytes, tuple, int, int]:
    """One row: packet bytes, op (usually one that suits the packet), offset, claimed length."""
    source = draw(st.sampled_from(["random", "tcp_udp", "icmp"]))
    if source == "random":
        raw = draw(st.binary(max_size=MAX_PACKET))
        if draw(st.booleans()) and raw:
            raw = bytes([0x40 | (raw[0] & 0x0F)]) + raw[1:]  # get past the version check
        suits = ANY_KIND
    else:
        valid = bytes(draw(tcp_udp_packets())) if source == "tcp_udp" else draw(icmp_errors())
        raw = _mangle(draw, valid)[:MAX_PACKET]
        suits = (NAT_KINDS if source == "tcp_udp" else ICMP_KINDS) + [rw.OP_TUNNEL, rw.OP_ICMP_UNREACH]
    kind = draw(st.one_of(st.sampled_from(suits), st.sampled_from(ANY_KIND)))
    op = (kind, draw(st.integers(0, 255)), draw(ports), draw(ports), draw(ports), draw(addresses), draw(addresses))
    offset = draw(st.one_of(st.just(rw.HEADROOM), st.just(rw.HEADROOM), st.integers(0, 24), st.integers(0, STRIDE)))
    length = draw(st.one_of(st.just(len(raw)), st.just(len(raw)), st.integers(0, STRIDE + 8)))
    return raw, op, offset, length


# --- checksum oracles ------------------------------------------------------------------
def _words_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _valid(total: int) -> bool:
    """A one's-complement sum including its checksum is valid when it folds to 0xffff."""
    return total != 0 and total % 0xFFFF == 0


def _ip_header_valid(pkt: bytes) -> bool:
    return _valid(_words_sum(pkt[: (pkt[0] & 0x0F) * 4]))


def _l4_valid(pkt: bytes) -> bool:
    ihl, total = (pkt[0] & 0x0F) * 4, struct.unpack_from("!H", pkt, 2)[0]
    pseudo = pkt[12:20] + struct.pack("!HH", pkt[9], total - ihl)
    return _valid(_words_sum(pseudo) + _words_sum(pkt[ihl:total]))


# --- robustness --------------------------------------------------------------------------
def _canary(n: int) -> np.ndarray:
    rows, cols = np.indices((n, STRIDE))
    return ((rows * 131 + cols * 7) % 251 ^ 0x5A).astype(np.uint8)


def _u16(b: bytes, at: int) -> int:
    return struct.unpack_from("!H", b, at)[0]


def _u32(b: bytes, at: int) -> int:
    return struct.unpack_from("!I", b, at)[0]


def _check_nat(old: bytes, new: bytes, kind: int, addr: int, port: int, full: bool = False) -> None:
    """Only the address, its port and the two checksums may change, to the op's values;
    with FLAG_FULL_CSUM the checksums are right afterwards whatever they were."""
    ihl, out = (old[0] & 0x0F) * 4, kind == rw.OP_NAT_OUT
    addr_at = 12 if out else 16
    allowed = {10, 11, *range(addr_at, addr_at + 4)}
    assert _u32(new, addr_at) == addr
    if _u16(old, 6) & 0x1FFF == 0:  # a non-first fragment has no L4 header to touch
        port_at, csum_at = ihl + (0 if out else 2), ihl + (16 if old[9] == 6 else 6)
        allowed |= {port_at, port_at + 1, csum_at, csum_at + 1}
        assert _u16(new, port_at) == port
        if not (old[9] == 17 and _u16(old, csum_at) == 0):  # UDP without checksum stays so
            if full and len(new) - ihl >= (20 if old[9] == 6 else 8):
                assert _l4_valid(new), "L4 checksum not right after a full recompute"
            elif not full:
                assert _l4_valid(new) == _l4_valid(old), "L4 checksum validity changed"
        else:
            assert _u16(new, csum_at) == 0
    changed = {i for i in range(len(old)) if old[i] != new[i]}
    assert changed <= allowed, f"NAT changed bytes {sorted(changed - allowed)}"


def _check_icmp(old: bytes, new: bytes, kind: int, addr: int, port: int) -> None:
    ihl, out = (old[0] & 0x0F) * 4, kind == rw.OP_ICMP_NAT_OUT
    q = ihl + 8  # the quoted IP header
    qihl = (old[q] & 0x0F) * 4
    assert _valid(_words_sum(old[ihl:])), "an ICMP message with a wrong checksum was translated"
    outer_at, quoted_at, port_at = (12, q + 16, q + qihl + 2) if out else (16, q + 12, q + qihl)
    csum_at = q + qihl + (16 if old[q + 9] == 6 else 6)
    allowed = {10, 11, ihl + 2, ihl + 3, q + 10, q + 11, port_at, port_at + 1, csum_at, csum_at + 1}
    allowed |= {*range(outer_at, outer_at + 4), *range(quoted_at, quoted_at + 4)}
    assert (_u32(new, outer_at), _u32(new, quoted_at), _u16(new, port_at)) == (addr, addr, port)
    assert _valid(_words_sum(new[ihl:])), "ICMP checksum not valid after translation"
    assert _ip_header_valid(new[q:]), "quoted IP header checksum not valid"
    changed = {i for i in range(len(old)) if old[i] != new[i]}
    assert changed <= allowed, f"ICMP translation changed bytes {sorted(changed - allowed)}"


ICMP_ERROR_MAX = 576  # icmp_send: the whole error message fits 576 bytes


def _apply_and_verify(rows: list[tuple[bytes, tuple, int, int]]) -> np.ndarray:
    """Run one batch of (bytes, op, offset, claimed length) rows and check every row's invariants."""
    n = len(rows)
    guarded = _canary(n + 2)  # a guard row before and after the batch
    buf = guarded[1:-1]
    lens = np.array([length for _, _, _, length in rows], dtype=np.uint32)
    offsets = np.array([offset for _, _, offset, _ in rows], dtype=np.uint32)
    ops = np.array([op for _, op, _, _ in rows], dtype=rw.OP_DTYPE)
    for i, (raw, _, offset, _) in enumerate(rows):
        chunk = raw[: max(0, STRIDE - offset)]
        buf[i, offset : offset + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
    before, lens_in, offsets_in = guarded.copy()[1:-1], lens.copy(), offsets.copy()

    results = rw.apply(buf, lens, ops, offsets)

    assert np.array_equal(guarded[0], _canary(n + 2)[0]) and np.array_equal(guarded[-1], _canary(n + 2)[-1])
    assert results.max() < rw.RW_COUNT
    for i in range(n):
        kind, code = int(ops[i]["kind"]), int(results[i])
        event(f"{rw.OP_NAMES[kind] if kind < rw.OP_COUNT else 'bad op'} -> {rw.RESULT_NAMES[code]}")
        off, length = int(offsets_in[i]), int(lens_in[i])
        if code != rw.RW_OK or kind == rw.OP_NONE:
            assert np.array_equal(buf[i], before[i]), f"row {i}: {rw.RESULT_NAMES[code]} but the row changed"
            assert (offsets[i], lens[i]) == (off, length)
            continue
        assert off + length <= STRIDE, "a packet that overruns its row was rewritten"
        old = bytes(before[i, off : off + length])
        total = _u16(old, 2)
        assert 20 <= (old[0] & 0x0F) * 4 <= total <= length, "rewrote a packet whose header does not fit"
        may_change = np.zeros(STRIDE, dtype=bool)
        addr, port = int(ops[i]["addr"]), int(ops[i]["port"])
        if kind == rw.OP_TUNNEL:
            assert (offsets[i], lens[i]) == (off - 20, total + 20)
            may_change[off - 20 : off] = True
            outer = bytes(buf[i, off - 20 : off])
            assert _ip_header_valid(outer) and outer[9] == 4 and _u16(outer, 2) == total + 20
            assert (_u32(outer, 16), _u32(outer, 12), _u16(outer, 4)) == (addr, int(ops[i]["addr2"]), ops[i]["id"])
        elif kind == rw.OP_ICMP_UNREACH:
            h = rw.ICMP_ERROR_HEADER
            quote = min(total, ICMP_ERROR_MAX - h)
            assert (offsets[i], lens[i]) == (off - h, h + quote)
            may_change[off - h : off] = True  # the quote itself is the packet, untouched
            msg = bytes(buf[i, off - h : off + quote])
            assert _ip_header_valid(msg[:20]) and msg[9] == 1 and _u16(msg, 2) == h + quote
            assert (msg[12:16], msg[16:20]) == (old[16:20], old[12:16])  # back to the sender, from its dst
            assert msg[20:22] == b"\x03\x03" and _valid(_words_sum(msg[20:]))  # port unreachable, sum right
        else:
            assert (offsets[i], lens[i]) == (off, total)
            may_change[off : off + total] = True
            new = bytes(buf[i, off : off + total])
            full = kind in (rw.OP_NAT_IN, rw.OP_NAT_OUT) and int(ops[i]["flags"]) & rw.FLAG_FULL_CSUM
            # Incremental updates keep a valid checksum valid and an invalid one invalid;
            # FLAG_FULL_CSUM (the FTP helper's packets) recomputes them: valid either way.
            assert _ip_header_valid(new) == (True if full else _ip_header_valid(old))
            if kind in (rw.OP_NAT_IN, rw.OP_NAT_OUT):
                _check_nat(old[:total], new, kind, addr, port, bool(full))
            else:
                _check_icmp(old[:total], new, kind, addr, port)
        assert np.array_equal(buf[i][~may_change], before[i][~may_change]), f"row {i}: wrote outside the packet"
    return results


@settings(max_examples=150, deadline=None)
@given(st.lists(fuzz_rows(), min_size=1, max_size=6))
def test_random_batches_never_escape_their_rows(rows):
    _apply_and_verify(rows)


@settings(max_examples=60, deadline=None)
@given(tcp_udp_packets(), st.sampled_from(NAT_KINDS + [rw.OP_TUNNEL]), ports, addresses)
def test_every_truncation_of_a_packet(packet, kind, port, addr):
    """The packet cut at every length, its total length saying so: one row per length."""
    raw = bytes(packet)
    rows = []
    for k in range(len(raw) + 1):
        cut = bytearray(raw[:k])
        if k >= 4:
            cut[2:4] = struct.pack("!H", k)
        rows.append((bytes(cut), (kind, 0, port, 0, 0, addr, 0), rw.HEADROOM, k))
    results = _apply_and_verify(rows)
    ihl = (raw[0] & 0x0F) * 4
    needed = ihl if kind == rw.OP_TUNNEL else ihl + (20 if raw[9] == 6 else 8)
    assert all(results[k] == rw.RW_OK for k in range(needed, len(raw) + 1))
    assert all(results[k] != rw.RW_OK for k in range(needed))


@settings(max_examples=20, deadline=None)
@given(ip_layers(), tcp_udp_packets(), st.sampled_from(ICMP_KINDS), ports, addresses)
def test_every_quote_length_of_an_icmp_error(outer, quoted_packet, kind, port, addr):
    """ICMP errors quoting every prefix of a packet, each with a right and with a wrong ICMP checksum."""
    quoted = bytes(quoted_packet)
    outer.flags, outer.options = 0, []
    rows = []
    for k in range(len(quoted) + 1):
        raw = bytes(outer / ICMP(type=3, code=3) / Raw(quoted[:k]))
        rows.append((raw[:MAX_PACKET], (kind, 0, port, 0, 0, addr, 0), rw.HEADROOM, len(raw)))
        bad = bytearray(raw)
        bad[20 + 2] ^= 0x01  # a wrong ICMP checksum (the outer header has no options)
        rows.append((bytes(bad[:MAX_PACKET]), (kind, 0, port, 0, 0, addr, 0), rw.HEADROOM, len(raw)))
    results = _apply_and_verify(rows)
    good, bad = results[0::2], results[1::2]
    qihl = (quoted[0] & 0x0F) * 4
    fits = [claimed <= MAX_PACKET for _, _, _, claimed in rows[0::2]]
    assert all(good[k] == rw.RW_OK for k in range(qihl + 4, len(quoted) + 1) if fits[k])
    assert all(bad[k] == rw.RW_BAD_CHECKSUM for k in range(qihl + 4, len(quoted) + 1) if fits[k])
    assert all(good[k] == bad[k] == rw.RW_BAD_EMBEDDED for k in range(qihl + 4) if fits[k])


@settings(max_examples=30, deadline=None)
@given(tcp_udp_packets(), addresses, addresses, ports, st.booleans())
def test_tunnel_at_every_offset(packet, rip, director, id, copy_df):
    """Encapsulation with the packet at each start from 0 to 40: fewer than 20 bytes before it is NO_ROOM."""
    raw = bytes(packet)[: STRIDE - 40]
    op = (rw.OP_TUNNEL, rw.FLAG_COPY_DF if copy_df else 0, 0, id, 0, rip, director)
    results = _apply_and_verify([(raw, op, offset, len(raw)) for offset in range(41)])
    assert list(results) == [rw.RW_NO_ROOM] * 20 + [rw.RW_OK] * 21


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=STRIDE), st.integers(0, rw.OP_COUNT), st.integers(0, 255))
def test_every_offset_and_length_of_one_row(data, kind, flags):
    """A single full row of random bytes, every op, packet claimed at every start."""
    for offset in range(0, STRIDE + 1, 17):
        buf = _canary(3)
        buf[1, : len(data)] = np.frombuffer(data, dtype=np.uint8)
        before = buf.copy()
        ops = np.zeros(3, dtype=rw.OP_DTYPE)
        ops[1]["kind"], ops[1]["flags"] = kind, flags
        lens = np.array([0, STRIDE - offset + (offset % 3), 0], dtype=np.uint32)
        offsets = np.array([0, offset, 0], dtype=np.uint32)
        results = rw.apply(buf, lens, ops, offsets)
        assert results.max() < rw.RW_COUNT
        assert np.array_equal(buf[0], before[0]) and np.array_equal(buf[2], before[2])
        if offset % 3 and rw.OP_NONE < kind < rw.OP_COUNT:
            assert results[1] == rw.RW_BAD_LAYOUT


# --- correctness against scapy -------------------------------------------------------------
def _run_one(raw: bytes, kind: int, addr: int, port: int = 0, addr2: int = 0, id: int = 0, flags: int = 0):
    buf = _canary(1) if len(raw) <= MAX_PACKET else np.zeros((1, rw.HEADROOM + len(raw)), np.uint8)
    buf[0, rw.HEADROOM : rw.HEADROOM + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    ops = np.zeros(1, dtype=rw.OP_DTYPE)
    ops[0] = (kind, flags, port, id, 0, addr, addr2)
    lens = np.array([len(raw)], dtype=np.uint32)
    offsets = np.full(1, rw.HEADROOM, dtype=np.uint32)
    results = rw.apply(buf, lens, ops, offsets)
    return int(results[0]), bytes(rw.packet(buf, offsets, lens, 0))


def _l4(pkt: IP):
    return pkt[TCP] if TCP in pkt else pkt[UDP]


def _recomputed(pkt: IP) -> bytes:
    """Bytes of pkt with scapy recomputing every checksum (a UDP checksum of 0 stays 0)."""
    del pkt.chksum
    l4 = _l4(pkt)
    if not (isinstance(l4, UDP) and l4.chksum == 0):
        del l4.chksum
    return bytes(pkt)


@settings(max_examples=200, deadline=None)
@given(tcp_udp_packets(), dotted, ports, st.booleans())
def test_nat_equals_scapy(packet, new_addr, new_port, inbound):
    raw = bytes(packet)
    expected = IP(raw)
    if inbound:
        expected.dst, _l4(expected).dport = new_addr, new_port
    else:
        expected.src, _l4(expected).sport = new_addr, new_port
    kind = rw.OP_NAT_IN if inbound else rw.OP_NAT_OUT
    assert _run_one(raw, kind, ip2int(new_addr), new_port) == (rw.RW_OK, _recomputed(expected))


@settings(max_examples=150, deadline=None)
@given(ip_layers(), l4_segments(), payloads, dotted, dotted, ports, ports, st.integers(0, 120), st.booleans(),
       st.sampled_from([3, 4, 11]), st.integers(0, 15))  # fmt: skip
def test_icmp_translation_restores_the_quoted_packet(
    ip, seg, payload, vip, rip, vport, rport, cut, outbound, type, code
):
    """An error about a NAT'd packet quotes, after translation, the packet as its sender sent it.

    OUT: the client sent C -> VIP:vport; the real server got C -> RIP:rport and sends an
    error about it, which the client must see from the VIP quoting C -> VIP:vport.
    IN: the real server sent RIP:rport -> C; the client got VIP:vport -> C and a router
    sends an error about it to the VIP, which the real server must see quoting its own.
    """
    sent = ip / seg / payload  # as its sender built it
    seen = IP(bytes(sent))  # as the far side received it, after NAT
    far = "198.51.100.77"
    if outbound:
        sent.dst, _l4(sent).dport = vip, vport
        seen.dst, _l4(seen).dport = rip, rport
        error = IP(src=rip, dst=sent.src) / ICMP(type=type, code=code)
        translated = IP(src=vip, dst=sent.src) / ICMP(type=type, code=code)
        kind, addr, port = rw.OP_ICMP_NAT_OUT, vip, vport
    else:
        sent.src, _l4(sent).sport = rip, rport
        seen.src, _l4(seen).sport = vip, vport
        error = IP(src=far, dst=vip) / ICMP(type=type, code=code)
        translated = IP(src=far, dst=rip) / ICMP(type=type, code=code)
        kind, addr, port = rw.OP_ICMP_NAT_IN, rip, rport
    sent_raw, seen_raw = _recomputed(sent), _recomputed(seen)
    ihl = (sent_raw[0] & 0x0F) * 4
    cut = max(cut, ihl + 4)  # header and ports are needed
    if cut == ihl + (16 if TCP in sent else 6) + 1:
        cut += 1  # half a quoted checksum cannot be updated; that case is not byte-exact
    raw = bytes(error / Raw(seen_raw[:cut]))
    assert _run_one(raw, kind, ip2int(addr), port) == (rw.RW_OK, bytes(translated / Raw(sent_raw[:cut])))


@settings(max_examples=100, deadline=None)
@given(tcp_udp_packets(), dotted, dotted, ports, st.booleans())
def test_tunnel_equals_scapy(packet, rip, director, id, copy_df):
    inner = bytes(packet)
    df = copy_df and packet.flags.DF
    expected = IP(src=director, dst=rip, proto=4, id=id, tos=inner[1], ttl=inner[8], flags="DF" if df else 0)
    flags = rw.FLAG_COPY_DF if copy_df else 0
    result = _run_one(inner, rw.OP_TUNNEL, ip2int(rip), addr2=ip2int(director), id=id, flags=flags)
    assert result == (rw.RW_OK, bytes(expected / Raw(inner)))


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b + b"\0" * (len(b) % 2)), dotted, dotted, ports, ports, st.booleans())
def test_udp_nat_summing_to_zero_is_sent_as_ffff(prefix, addr, new_addr, port, new_port, inbound):
    """The last payload word is chosen so the rewritten packet's checksum computes to 0 (RFC 768: 0xffff)."""

    def build(a: str, p: int, word: int) -> IP:
        ip, udp = (IP(dst=a), UDP(dport=p)) if inbound else (IP(src=a), UDP(sport=p))
        return ip / udp / (prefix + struct.pack("!H", word))

    word = _u16(bytes(build(new_addr, new_port, 0)), 26)  # ~sum with the last word zero
    rewritten = bytes(build(new_addr, new_port, word))
    assert rewritten[26:28] == b"\xff\xff"
    kind = rw.OP_NAT_IN if inbound else rw.OP_NAT_OUT
    assert _run_one(bytes(build(addr, port, word)), kind, ip2int(new_addr), new_port) == (rw.RW_OK, rewritten)
