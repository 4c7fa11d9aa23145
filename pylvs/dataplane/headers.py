"""Header parsing for the engine: one numba pass over a batch, fields into a flat array.

The batch layout is the one the rewrite helpers use (``csrc/rewrite.h``): row ``i`` of a
``uint8[n, stride]`` buffer holds an IPv4 packet (IP header first, as NFQUEUE delivers
it) starting at ``off[i]``, ``lens[i]`` bytes long.  ``parse_batch`` fills
``fields[i, F_*]`` with what the engine needs to key a connection and returns nothing;
``fields[i, F_REASON]`` says whether the packet could be parsed (``R_OK``) or why not.

Rules of this module: nothing here raises for packet bytes, nothing reads outside
``[off[i], off[i] + lens[i])`` nor outside the row, and every packet gets exactly one
reason.  Non-first fragments carry no ports, so they are classified, not keyed (on the
NFQUEUE path the kernel's defragmenter has already reassembled them; reference 7.8).
"""

from __future__ import annotations

import numpy as np
from numba import njit

# --- Field columns of ``fields`` (int64) ----------------------------------------------
(
    F_REASON,    # R_* below
    F_PROTO,     # IP protocol number
    F_SADDR,     # addresses and ports in host order
    F_DADDR,
    F_SPORT,     # TCP/UDP ports; ICMP: 0
    F_DPORT,
    F_TCP_FLAGS,  # TCP flag byte (FIN 0x01 SYN 0x02 RST 0x04 ACK 0x10 ...)
    F_IHL,       # IP header length in bytes
    F_TOTAL,     # IP total length (bytes of the datagram; anything after it is padding)
    F_FRAG,      # FRAG_NONE / FRAG_FIRST / FRAG_LATER
    F_ICMP_TYPE,  # ICMP: type and code; -1 otherwise
    F_ICMP_CODE,
    # ICMP errors: the quoted packet's key (-1 when absent)
    F_IN_PROTO,
    F_IN_SADDR,
    F_IN_DADDR,
    F_IN_SPORT,
    F_IN_DPORT,
    # The connection table's index hashes of the packet's key, as its in-key and as a
    # real server's reply (the engine fills them once per packet; the parser leaves -1)
    F_HASH_IN,
    F_HASH_OUT,
) = range(19)  # fmt: skip
N_FIELDS = 19

# --- Reasons, one counter slot each --------------------------------------------------
R_OK = 0
R_TRUNCATED = 1  # fewer bytes than an IPv4 header, its IHL, or its total length
R_NOT_IPV4 = 2  # version field is not 4
R_BAD_IHL = 3  # IHL < 5, or larger than the total length
R_FRAGMENT = 4  # a non-first fragment: no transport header to key on
R_L4_TRUNCATED = 5  # TCP/UDP/ICMP header cut short
R_OTHER_PROTO = 6  # not TCP, UDP or ICMP: not for a virtual service
REASON_NAMES = (
    "ok", "truncated", "not_ipv4", "bad_ihl", "fragment", "l4_truncated", "other_proto",
)  # fmt: skip

FRAG_NONE, FRAG_FIRST, FRAG_LATER = 0, 1, 2

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
IPV4_MIN_HEADER = 20  # RFC 791
TCP_MIN_HEADER = 20  # RFC 793
UDP_HEADER = 8  # RFC 768
ICMP_HEADER = 8  # RFC 792: type, code, checksum, 4 bytes of rest
ICMP_QUOTED_L4 = 8  # an ICMP error quotes the IP header and at least 8 bytes after it


@njit(cache=True, error_model="numpy", inline="always")
def _u16(row, at):
    return (np.int64(row[at]) << 8) | np.int64(row[at + 1])


@njit(cache=True, error_model="numpy", inline="always")
def _u32(row, at):
    return (
        (np.int64(row[at]) << 24) | (np.int64(row[at + 1]) << 16)
        | (np.int64(row[at + 2]) << 8) | np.int64(row[at + 3])
    )  # fmt: skip


@njit(cache=True, error_model="numpy", inline="always")
def _is_icmp_error(icmp_type):
    # The errors IPVS translates (ip_vs_in_icmp): destination unreachable, source
    # quench, time exceeded.
    return icmp_type == 3 or icmp_type == 4 or icmp_type == 11


@njit(cache=True, error_model="numpy")
def _parse_one(row, start, length, f):
    """Parse the packet at ``row[start:start+length]`` into ``f`` (one fields row)."""
    for k in range(N_FIELDS):
        f[k] = -1
    f[F_REASON] = R_OK
    # Never trust off/len: clip to the row.
    if start < 0 or start > row.shape[0]:
        f[F_REASON] = R_TRUNCATED
        return
    avail = min(length, row.shape[0] - start)
    if avail < IPV4_MIN_HEADER:
        f[F_REASON] = R_TRUNCATED
        return
    if row[start] >> 4 != 4:
        f[F_REASON] = R_NOT_IPV4
        return
    ihl = np.int64(row[start] & 0x0F) * 4
    total = _u16(row, start + 2)
    if ihl < IPV4_MIN_HEADER or ihl > total:
        f[F_REASON] = R_BAD_IHL
        return
    if total > avail:
        f[F_REASON] = R_TRUNCATED
        return
    proto = np.int64(row[start + 9])
    frag_field = _u16(row, start + 6)
    offset = frag_field & 0x1FFF
    more = (frag_field & 0x2000) != 0
    f[F_PROTO] = proto
    f[F_SADDR] = _u32(row, start + 12)
    f[F_DADDR] = _u32(row, start + 16)
    f[F_IHL] = ihl
    f[F_TOTAL] = total
    f[F_FRAG] = FRAG_LATER if offset else (FRAG_FIRST if more else FRAG_NONE)
    if offset:
        f[F_REASON] = R_FRAGMENT
        return
    l4 = start + ihl
    l4_len = total - ihl
    if proto == IPPROTO_TCP:
        if l4_len < TCP_MIN_HEADER:
            f[F_REASON] = R_L4_TRUNCATED
            return
        f[F_SPORT] = _u16(row, l4)
        f[F_DPORT] = _u16(row, l4 + 2)
        f[F_TCP_FLAGS] = np.int64(row[l4 + 13])
    elif proto == IPPROTO_UDP:
        if l4_len < UDP_HEADER:
            f[F_REASON] = R_L4_TRUNCATED
            return
        f[F_SPORT] = _u16(row, l4)
        f[F_DPORT] = _u16(row, l4 + 2)
    elif proto == IPPROTO_ICMP:
        if l4_len < ICMP_HEADER:
            f[F_REASON] = R_L4_TRUNCATED
            return
        f[F_SPORT] = 0
        f[F_DPORT] = 0
        icmp_type = np.int64(row[l4])
        f[F_ICMP_TYPE] = icmp_type
        f[F_ICMP_CODE] = np.int64(row[l4 + 1])
        if _is_icmp_error(icmp_type):
            _parse_quoted(row, l4 + ICMP_HEADER, total - ihl - ICMP_HEADER, f)
    else:
        f[F_REASON] = R_OTHER_PROTO


@njit(cache=True, error_model="numpy")
def _parse_quoted(row, q, q_len, f):
    """The quoted packet of an ICMP error: its key, when enough of it is there.

    An error whose quote is too short to key keeps F_IN_* at -1; the engine then
    treats the error as not belonging to any connection (reference 8, ip_vs_in_icmp).
    """
    if q_len < IPV4_MIN_HEADER or row[q] >> 4 != 4:
        return
    q_ihl = np.int64(row[q] & 0x0F) * 4
    if q_ihl < IPV4_MIN_HEADER or q_len < q_ihl + ICMP_QUOTED_L4:
        return
    if _u16(row, q + 6) & 0x1FFF:
        return  # quotes a non-first fragment: no ports to match
    q_proto = np.int64(row[q + 9])
    if q_proto != IPPROTO_TCP and q_proto != IPPROTO_UDP:
        return
    f[F_IN_PROTO] = q_proto
    f[F_IN_SADDR] = _u32(row, q + 12)
    f[F_IN_DADDR] = _u32(row, q + 16)
    f[F_IN_SPORT] = _u16(row, q + q_ihl)
    f[F_IN_DPORT] = _u16(row, q + q_ihl + 2)


@njit(cache=True, error_model="numpy")
def _parse_batch(buf, off, lens, n, fields, counts):
    for i in range(n):
        _parse_one(buf[i], np.int64(off[i]), np.int64(lens[i]), fields[i])
        counts[fields[i, F_REASON]] += 1


def new_fields(n: int) -> np.ndarray:
    return np.empty((n, N_FIELDS), dtype=np.int64)


def parse_batch(buf: np.ndarray, off: np.ndarray, lens: np.ndarray, fields: np.ndarray,
                counts: np.ndarray, n: int | None = None) -> None:
    """Parse the first ``n`` packets (all rows by default); ``counts[reason] += 1`` each.

    Shapes and dtypes are checked here (programming errors raise ValueError); packet
    bytes never raise.
    """
    rows = buf.shape[0]
    n = rows if n is None else n
    if buf.dtype != np.uint8 or buf.ndim != 2 or not buf.flags.c_contiguous:
        raise ValueError("buf must be a C-contiguous uint8 array of shape (n, stride)")
    if not 0 <= n <= rows or off.shape[0] < n or lens.shape[0] < n:
        raise ValueError(f"n={n} does not fit buf ({rows} rows), off ({off.shape[0]}), lens ({lens.shape[0]})")
    if fields.dtype != np.int64 or fields.shape[1] != N_FIELDS or fields.shape[0] < n:
        raise ValueError(f"fields must be int64 of shape (>= {n}, {N_FIELDS}); use new_fields()")
    if counts.shape[0] < len(REASON_NAMES):
        raise ValueError(f"counts needs {len(REASON_NAMES)} slots (REASON_NAMES)")
    _parse_batch(buf, off, lens, n, fields, counts)
