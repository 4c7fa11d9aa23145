"""Batch packet rewrite for the forwarding methods, through ``csrc/rewrite.c``.

The forwarding engine decides per packet what to do and fills one op record per
packet; :func:`apply` then does all the byte work of the batch in one C call.

Batch layout
    ``buf``      uint8 array ``[n, stride]``, C-contiguous: one row per packet.
    ``offsets``  uint32 ``[n]``, in/out: where packet ``i`` (an IPv4 packet, IP
                 header first) starts in row ``i``.  Adapters put packets at
                 :data:`HEADROOM` (64), leaving room for the 20-byte IPIP header.
    ``lens``     uint32 ``[n]``, in/out: the bytes of packet ``i`` present.
    ``ops``      :data:`OP_DTYPE` ``[n]``: what to do with packet ``i``.
    result       uint8 ``[n]``: an ``RW_*`` code per packet (``RESULT_NAMES``).

On ``RW_OK`` with a kind other than ``OP_NONE``, ``offsets[i]``/``lens[i]``
describe the rewritten packet: ``lens[i]`` becomes the IP total length (link
padding dropped) and ``OP_TUNNEL`` moves ``offsets[i]`` back by 20.  Any other
result leaves the packet, its offset and its length as they were.  The C code
never reads or writes outside row ``i``.

Ops (``addr``, ``addr2``, ``port``, ``id`` in host byte order):
    ``OP_NONE``          untouched (pass, drop, direct routing).
    ``OP_NAT_IN``        dst := addr, TCP/UDP dport := port.
    ``OP_NAT_OUT``       src := addr (VIP), TCP/UDP sport := port (vport).
    ``OP_ICMP_NAT_IN``   ICMP error towards a real server about a NAT reply:
                         outer dst := addr, quoted src := addr, quoted sport := port.
    ``OP_ICMP_NAT_OUT``  ICMP error from a real server about a client's packet:
                         outer src := addr, quoted dst := addr, quoted dport := port.
    ``OP_TUNNEL``        prepend an IPIP header: dst := addr, src := addr2, id :=
                         id, TOS/TTL copied, DF copied with ``FLAG_COPY_DF``.
    ``OP_ICMP_UNREACH``  the packet becomes the ICMP port unreachable for its
                         sender (from its dst, id := id), quoting it (cut to
                         576 bytes in all); ``offsets[i]`` moves back by 28.

NAT updates the IP and TCP/UDP checksums incrementally (RFC 1624; a UDP
checksum of 0 stays 0).  A non-first fragment only has its IP header rewritten;
a first fragment is updated incrementally, which stays exact although its L4
checksum covers the whole datagram.  ICMP translation recomputes the quoted IP
header checksum and the ICMP checksum, and updates the quoted TCP/UDP checksum
when it is among the quoted bytes, so the receiver sees its own packet quoted
(``FLAG_KEEP_QUOTED_CSUM`` leaves it stale, as the kernel's ``ip_vs_nat_icmp``
does).  The full description is the header comment of ``csrc/rewrite.h``.

Packet problems are result codes, never exceptions; :func:`apply` raises
``ValueError`` only for arrays of the wrong shape, type or layout.
"""

from __future__ import annotations

import numpy as np

from pylvs._native import ffi, lib

HEADROOM: int = lib.PL_HEADROOM
IPIP_HEADER: int = lib.PL_IPIP_HEADER
ICMP_ERROR_HEADER: int = lib.PL_ICMP_ERROR_HEADER

OP_NONE: int = lib.PL_OP_NONE
OP_NAT_IN: int = lib.PL_OP_NAT_IN
OP_NAT_OUT: int = lib.PL_OP_NAT_OUT
OP_ICMP_NAT_IN: int = lib.PL_OP_ICMP_NAT_IN
OP_ICMP_NAT_OUT: int = lib.PL_OP_ICMP_NAT_OUT
OP_TUNNEL: int = lib.PL_OP_TUNNEL
OP_ICMP_UNREACH: int = lib.PL_OP_ICMP_UNREACH
OP_COUNT: int = lib.PL_OP_COUNT

FLAG_COPY_DF: int = lib.PL_RWF_COPY_DF
FLAG_KEEP_QUOTED_CSUM: int = lib.PL_RWF_KEEP_QUOTED_CSUM
FLAG_FULL_CSUM: int = lib.PL_RWF_FULL_CSUM

RW_OK: int = lib.PL_RW_OK
RW_BAD_OP: int = lib.PL_RW_BAD_OP
RW_BAD_LAYOUT: int = lib.PL_RW_BAD_LAYOUT
RW_TRUNCATED: int = lib.PL_RW_TRUNCATED
RW_BAD_HEADER: int = lib.PL_RW_BAD_HEADER
RW_NOT_L4: int = lib.PL_RW_NOT_L4
RW_L4_TRUNCATED: int = lib.PL_RW_L4_TRUNCATED
RW_NOT_ICMP_ERROR: int = lib.PL_RW_NOT_ICMP_ERROR
RW_FRAGMENTED: int = lib.PL_RW_FRAGMENTED
RW_BAD_EMBEDDED: int = lib.PL_RW_BAD_EMBEDDED
RW_NO_ROOM: int = lib.PL_RW_NO_ROOM
RW_TOO_BIG: int = lib.PL_RW_TOO_BIG
RW_BAD_CHECKSUM: int = lib.PL_RW_BAD_CHECKSUM
RW_COUNT: int = lib.PL_RW_COUNT


def _enum_names(prefix: str, count: int) -> tuple[str, ...]:
    """Names of the C enum constants ``prefix*`` by value, checked to be 0..count-1."""
    by_value = {
        getattr(lib, name): name[len(prefix) :]
        for name in dir(lib)
        if name.startswith(prefix) and name != prefix + "COUNT"
    }
    if sorted(by_value) != list(range(count)):
        raise ImportError(f"{prefix}* constants are not 0..{count - 1}: {by_value}")
    return tuple(by_value[v] for v in range(count))


#: ``RESULT_NAMES[code]``: the C name without ``PL_RW_``, e.g. ``"TRUNCATED"``.
RESULT_NAMES: tuple[str, ...] = _enum_names("PL_RW_", RW_COUNT)
#: ``OP_NAMES[kind]``: the C name without ``PL_OP_``, e.g. ``"NAT_IN"``.
OP_NAMES: tuple[str, ...] = _enum_names("PL_OP_", OP_COUNT)

#: One ``struct pl_rewrite_op``; numba code can fill arrays of it directly.
OP_DTYPE = np.dtype(
    [
        ("kind", np.uint8),
        ("flags", np.uint8),
        ("port", np.uint16),
        ("id", np.uint16),
        ("reserved", np.uint16),
        ("addr", np.uint32),
        ("addr2", np.uint32),
    ],
    align=True,
)

_C_OP = "struct pl_rewrite_op"
if OP_DTYPE.itemsize != ffi.sizeof(_C_OP) or any(
    OP_DTYPE.fields[name][1] != ffi.offsetof(_C_OP, name) for name in OP_DTYPE.names
):
    raise ImportError(f"OP_DTYPE does not match {_C_OP} in csrc/rewrite.h")


def _check_array(name: str, a: np.ndarray, dtype: np.dtype, ndim: int, writable: bool) -> None:
    if not isinstance(a, np.ndarray):
        # ValueError for every layout mistake, so callers catch one type.
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")  # noqa: TRY004
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {dtype}, got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and not a.flags.writeable:
        raise ValueError(f"{name} must be writable")


def apply(
    buf: np.ndarray,
    lens: np.ndarray,
    ops: np.ndarray,
    offsets: np.ndarray | None = None,
    results: np.ndarray | None = None,
) -> np.ndarray:
    """Apply ``ops[i]`` to packet ``i`` of the batch in place, in one C call.

    ``offsets`` (uint32, updated in place) says where each packet starts; without
    it every packet starts at :data:`HEADROOM` and a tunnelled packet ends up at
    ``HEADROOM - IPIP_HEADER``.  ``results`` may be passed to avoid allocating.
    Returns the uint8 result code per packet.
    """
    _check_array("buf", buf, np.dtype(np.uint8), 2, True)
    n, stride = buf.shape
    _check_array("lens", lens, np.dtype(np.uint32), 1, True)
    _check_array("ops", ops, OP_DTYPE, 1, False)
    if offsets is None:
        offsets = np.full(n, HEADROOM, dtype=np.uint32)
    _check_array("offsets", offsets, np.dtype(np.uint32), 1, True)
    if results is None:
        results = np.empty(n, dtype=np.uint8)
    _check_array("results", results, np.dtype(np.uint8), 1, True)
    for name, a in (("lens", lens), ("ops", ops), ("offsets", offsets), ("results", results)):
        if a.shape[0] != n:
            raise ValueError(f"{name} has {a.shape[0]} entries for a batch of {n} rows")
    _apply_checked_arrays(buf, lens, ops, offsets, results)
    return results


def _apply_checked_arrays(buf: np.ndarray, lens: np.ndarray, ops: np.ndarray, offsets: np.ndarray,
                          results: np.ndarray) -> int:
    """The C call itself, for callers whose arrays are already known good (``apply``
    after its checks; the engine, which made them).  Returns how many packets were
    rewritten (PL_RW_OK with an op other than PL_OP_NONE)."""
    n, stride = buf.shape
    return lib.pl_rewrite_batch(
        ffi.from_buffer("uint8_t[]", buf, require_writable=True),
        n,
        stride,
        ffi.from_buffer("uint32_t[]", offsets, require_writable=True),
        ffi.from_buffer("uint32_t[]", lens, require_writable=True),
        ffi.from_buffer(_C_OP + "[]", ops),
        ffi.from_buffer("uint8_t[]", results, require_writable=True),
    )


def pointer(a: np.ndarray, ctype: str):
    """The cdata a C call takes for array ``a`` (made once by callers that reuse arrays:
    ``ffi.from_buffer`` costs about a microsecond)."""
    return ffi.from_buffer(ctype + "[]", a, require_writable=ctype != _C_OP)


OP_CTYPE, U8_CTYPE, U32_CTYPE = _C_OP, "uint8_t", "uint32_t"


def _apply_pointers(buf_c, n: int, stride: int, off_c, lens_c, ops_c, res_c) -> int:
    """``pl_rewrite_batch`` on pointers made with ``pointer`` (the engine's hot path)."""
    return lib.pl_rewrite_batch(buf_c, n, stride, off_c, lens_c, ops_c, res_c)


def packet(buf: np.ndarray, offsets: np.ndarray, lens: np.ndarray, i: int) -> np.ndarray:
    """A view of packet ``i`` as it now stands in its row (no copy)."""
    start = int(offsets[i])
    return buf[i, start : start + int(lens[i])]
