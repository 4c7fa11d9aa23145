/* In-place packet rewrite for the forwarding methods (reference section 8),
 * applied to a whole batch in one call.
 *
 * Batch layout
 *   buf      n rows of `stride` bytes (a C-contiguous uint8 [n, stride] array).
 *   off[i]   in/out: where packet i (an IPv4 packet, IP header first, as NFQUEUE
 *            delivers it) starts inside row i.  Adapters write packets at
 *            PL_HEADROOM, which leaves room for the 20-byte IPIP outer header
 *            and keeps the IP header on a cacheline boundary.
 *   lens[i]  in/out: the bytes of packet i present in the row.
 *   ops[i]   what to do with packet i (struct pl_rewrite_op).
 *   res[i]   out: a PL_RW_* code.
 * On PL_RW_OK with a kind other than PL_OP_NONE, off[i] and lens[i] describe
 * the rewritten packet: lens[i] becomes the IP total length (trailing link
 * padding dropped), and PL_OP_TUNNEL moves off[i] back by 20.  On any other
 * code the packet, off[i] and lens[i] are left exactly as they were.  Nothing
 * is read or written outside row i, whatever the bytes, offsets or lengths.
 *
 * Op kinds (addresses and ports in host byte order)
 *   PL_OP_NONE          nothing (pass, drop, DR: DR only changes the MAC).
 *   PL_OP_NAT_IN        client -> VIP to the real server: dst := addr,
 *                       TCP/UDP dport := port.
 *   PL_OP_NAT_OUT       real server's reply to the client: src := addr (VIP),
 *                       TCP/UDP sport := port (vport).
 *     Both update the IP header checksum and the TCP/UDP checksum
 *     incrementally (RFC 1624); a UDP checksum of 0 (none) stays 0.  With
 *     PL_RWF_FULL_CSUM both are recomputed in full instead (the engine's FTP
 *     helper has rewritten bytes the old checksum covered).  A
 *     non-first fragment has no L4 header: only its IP header changes.  A
 *     first fragment's L4 checksum covers the whole datagram, but the
 *     incremental update of address and port is still exact for it.
 *   PL_OP_ICMP_NAT_IN   ICMP error from the client side about a NAT reply,
 *                       going to the real server: outer dst := addr (RIP),
 *                       quoted src := addr, quoted sport := port (rport).
 *   PL_OP_ICMP_NAT_OUT  ICMP error from the real server about a client's
 *                       packet, going to the client: outer src := addr (VIP),
 *                       quoted dst := addr, quoted dport := port (vport).
 *     As ip_vs_nat_icmp (ip_vs_core.c): outer IP checksum, quoted IP header
 *     checksum, and the ICMP checksum over the whole message are fixed.  The
 *     quoted TCP/UDP checksum is also updated incrementally when it lies in
 *     the quoted bytes (as nf_nat_proto.c does; IPVS leaves it stale), so the
 *     receiver sees its own packet quoted; flag PL_RWF_KEEP_QUOTED_CSUM
 *     leaves it exactly as IPVS does.  Only DEST_UNREACH, SOURCE_QUENCH and
 *     TIME_EXCEEDED are translated, as ip_vs_in_icmp/ip_vs_out_icmp; the
 *     message must be whole (not a fragment) and its ICMP checksum right.
 *     The outer IP checksum is updated incrementally (a corrupt one stays
 *     corrupt); the quoted one is recomputed, as ip_send_check does there.
 *   PL_OP_TUNNEL        IPIP (RFC 2003): prepend a 20-byte IPv4 header, src
 *                       := addr2 (director), dst := addr (real server), id :=
 *                       id, TOS and TTL copied from the inner header, DF
 *                       copied only with PL_RWF_COPY_DF (pmtu_disc,
 *                       ip_vs_xmit.c), protocol 4.  The inner packet is
 *                       unchanged.
 *   PL_OP_ICMP_UNREACH  the packet becomes the ICMP port unreachable the
 *                       kernel sends when no real server is available
 *                       (ip_vs_leave, reference 7.8 step 5): a new IPv4 header
 *                       (src := the packet's dst, dst := its src, TTL 64, id
 *                       := id, TOS 0xc0 as icmp_send) and ICMP type 3 code 3
 *                       are written in the 28 bytes before it; the packet,
 *                       cut to fit 576 bytes, is the quote.  off moves back 28.
 *
 * Validation, before any byte is written: off + len within the row; len >=
 * 20, version 4, IHL >= 5 (options are fine everywhere), IHL*4 <= total
 * length <= len (the datagram is `total length` bytes; anything after it is
 * padding); the TCP (20 bytes) or UDP (8) header present unless the packet is
 * a non-first fragment; for ICMP ops the ICMP header, the quoted IP header
 * and the quoted ports present; for PL_OP_TUNNEL 20 bytes of headroom and an
 * outer total length <= 65535; for PL_OP_ICMP_UNREACH 28 bytes of headroom.
 * PL_OP_NONE checks nothing.
 *
 * Result codes: one per packet, PL_RW_OK or the first check that failed; the
 * engine turns them into named drop counters (RESULT_NAMES in rewrite.py).
 * pl_rewrite_batch returns how many packets were rewritten (PL_RW_OK with a
 * kind other than PL_OP_NONE). */
#ifndef PYLVS_REWRITE_H
#define PYLVS_REWRITE_H
#include <stddef.h>
#include <stdint.h>

enum {
    PL_HEADROOM = 64,       /* >= PL_IPIP_HEADER and PL_ICMP_ERROR_HEADER; one cacheline */
    PL_IPIP_HEADER = 20,    /* outer IPv4 header without options */
    PL_ICMP_ERROR_HEADER = 28,  /* IPv4 header + ICMP header in front of the quote */
    PL_ICMP_ERROR_MAX = 576     /* icmp_send: an error message fits 576 bytes (RFC 1812) */
};

enum {
    PL_OP_NONE = 0,
    PL_OP_NAT_IN = 1,
    PL_OP_NAT_OUT = 2,
    PL_OP_ICMP_NAT_IN = 3,
    PL_OP_ICMP_NAT_OUT = 4,
    PL_OP_TUNNEL = 5,
    PL_OP_ICMP_UNREACH = 6,
    PL_OP_COUNT = 7
};

enum {
    PL_RWF_COPY_DF = 1,          /* PL_OP_TUNNEL: copy DF from the inner header */
    PL_RWF_KEEP_QUOTED_CSUM = 2, /* PL_OP_ICMP_NAT_*: leave the quoted L4 checksum */
    PL_RWF_FULL_CSUM = 4         /* PL_OP_NAT_*: recompute both checksums in full (the FTP
                                  * helper changed the payload, its length or seq/ack) */
};

enum {
    PL_RW_OK = 0,
    PL_RW_BAD_OP = 1,         /* unknown op kind (a caller bug, counted anyway) */
    PL_RW_BAD_LAYOUT = 2,     /* off + len does not fit the row */
    PL_RW_TRUNCATED = 3,      /* < 20 bytes, or total length > bytes present */
    PL_RW_BAD_HEADER = 4,     /* version != 4, IHL < 5, total length < IHL */
    PL_RW_NOT_L4 = 5,         /* not TCP/UDP (outer for NAT, quoted for ICMP),
                                 or an ICMP error about a non-first fragment */
    PL_RW_L4_TRUNCATED = 6,   /* TCP (20) / UDP (8) / ICMP (8) header cut short */
    PL_RW_NOT_ICMP_ERROR = 7, /* ICMP op on a non-ICMP packet or another type */
    PL_RW_FRAGMENTED = 8,     /* ICMP op on a fragment: the message is not whole */
    PL_RW_BAD_EMBEDDED = 9,   /* quoted IP header or its ports malformed/cut */
    PL_RW_NO_ROOM = 10,       /* fewer than 20 bytes of headroom before off */
    PL_RW_TOO_BIG = 11,       /* encapsulated total length would exceed 65535 */
    PL_RW_BAD_CHECKSUM = 12,  /* ICMP op: received ICMP checksum wrong (ip_vs_in_icmp
                                 drops these; recomputing would hide corruption) */
    PL_RW_COUNT = 13
};

struct pl_rewrite_op {
    uint8_t kind;    /* PL_OP_* */
    uint8_t flags;   /* PL_RWF_* */
    uint16_t port;   /* new port (NAT, ICMP NAT) */
    uint16_t id;     /* outer IP id (TUNNEL) */
    uint16_t reserved;
    uint32_t addr;   /* new address (NAT, ICMP NAT); outer dst (TUNNEL) */
    uint32_t addr2;  /* outer src (TUNNEL) */
};

size_t pl_rewrite_batch(uint8_t *buf, size_t n, size_t stride, uint32_t *off,
                        uint32_t *lens, const struct pl_rewrite_op *ops,
                        uint8_t *res);

#endif
