/* Batch packet rewrite for NAT, ICMP-error NAT and IPIP (see rewrite.h).
 *
 * Every packet is validated against the bytes present before anything is
 * written; a packet that fails gets a result code and is not modified.  All
 * reads and writes stay within [row + off - 20, row + off + len), and the
 * headroom write is only made after checking off >= 20. */
#include "rewrite.h"
#include "checksum.h"

/* RFC 791 IPv4 header */
#define IP_VERSION 4
#define IP_MIN_HEADER 20
#define IP_MAX_TOTAL 65535u
#define IP_TOS 1
#define IP_TOTLEN 2
#define IP_ID 4
#define IP_FRAG 6
#define IP_TTL 8
#define IP_PROTO 9
#define IP_CSUM 10
#define IP_SRC 12
#define IP_DST 16
#define IP_DF 0x4000u
#define IP_MF 0x2000u
#define IP_OFFMASK 0x1fffu

/* Protocol numbers (IANA) */
#define PROTO_ICMP 1
#define PROTO_IPIP 4   /* RFC 2003 */
#define PROTO_TCP 6
#define PROTO_UDP 17

/* RFC 793 / RFC 768: ports lead both headers */
#define L4_SPORT 0
#define L4_DPORT 2
#define L4_PORTS_LEN 4
#define TCP_CSUM 16
#define TCP_MIN_HEADER 20
#define UDP_CSUM 6
#define UDP_HEADER 8

/* RFC 792: type, code, checksum, 4 bytes unused, then the quoted header */
#define ICMP_HEADER 8
#define ICMP_CSUM 2
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PORT_UNREACH 3
#define ICMP_ERROR_TTL 64      /* sysctl_ip_default_ttl */
#define ICMP_ERROR_TOS 0xc0u   /* icmp_send: IPTOS_PREC_INTERNETCONTROL */

static uint16_t load16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t load32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void store16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void store32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* RFC 1071 one's-complement sum of [p, p + n), folded to 16 bits.  The
 * checksum.c helpers are specific to IP and TCP/UDP; ICMP needs a plain one. */
static uint16_t sum16(const uint8_t *p, size_t n)
{
    uint64_t acc = 0;
    for (; n >= 2; p += 2, n -= 2)
        acc += (uint32_t)p[0] << 8 | p[1];
    if (n)
        acc += (uint32_t)p[0] << 8;
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

/* Validate the IPv4 header against the `len` bytes present.  The datagram is
 * `total` bytes (its total length field): link padding after it is ignored. */
static int check_ipv4(const uint8_t *ip, size_t len, size_t *ihl_out, size_t *total_out)
{
    if (len < IP_MIN_HEADER)
        return PL_RW_TRUNCATED;
    if (ip[0] >> 4 != IP_VERSION)
        return PL_RW_BAD_HEADER;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t total = load16(ip + IP_TOTLEN);
    if (ihl < IP_MIN_HEADER || total < ihl)
        return PL_RW_BAD_HEADER;
    if (total > len)
        return PL_RW_TRUNCATED;
    *ihl_out = ihl;
    *total_out = total;
    return PL_RW_OK;
}

/* Incremental (RFC 1624) update of a TCP/UDP checksum at p for one address
 * (in the pseudo-header) and one port.  UDP: 0 means "no checksum" and stays
 * 0; a result of 0 is sent as 0xffff (RFC 768). */
static void l4_csum_update(uint8_t *p, int udp, uint32_t old_addr, uint32_t new_addr,
                           uint16_t old_port, uint16_t new_port)
{
    uint16_t c = load16(p);
    if (udp && c == 0)
        return;
    c = pl_csum_update32(c, old_addr, new_addr);
    c = pl_csum_update16(c, old_port, new_port);
    if (udp && c == 0)
        c = 0xffff;
    store16(p, c);
}

/* NAT_IN rewrites the destination, NAT_OUT the source (ip_vs_nat_xmit and
 * the protocols' snat/dnat handlers).  A non-first fragment carries no L4
 * header, so only its IP header changes; the first fragment's checksum
 * covers the whole datagram, and the incremental update stays exact. */
static int nat(uint8_t *ip, size_t ihl, size_t total, const struct pl_rewrite_op *op, int out)
{
    uint8_t proto = ip[IP_PROTO];
    if (proto != PROTO_TCP && proto != PROTO_UDP)
        return PL_RW_NOT_L4;
    int udp = proto == PROTO_UDP;
    int has_l4 = (load16(ip + IP_FRAG) & IP_OFFMASK) == 0;
    if (has_l4 && total - ihl < (udp ? UDP_HEADER : TCP_MIN_HEADER))
        return PL_RW_L4_TRUNCATED;

    uint8_t *addr = ip + (out ? IP_SRC : IP_DST);
    uint32_t old_addr = load32(addr);
    store32(addr, op->addr);
    store16(ip + IP_CSUM, pl_csum_update32(load16(ip + IP_CSUM), old_addr, op->addr));
    if (!has_l4) {
        if (op->flags & PL_RWF_FULL_CSUM)
            store16(ip + IP_CSUM, pl_csum_ipv4_header(ip, ihl));
        return PL_RW_OK;
    }

    uint8_t *l4 = ip + ihl;
    uint8_t *port = l4 + (out ? L4_SPORT : L4_DPORT);
    uint16_t old_port = load16(port);
    store16(port, op->port);
    if (op->flags & PL_RWF_FULL_CSUM)
        pl_ipv4_fix_checksums(ip, total);
    else
        l4_csum_update(l4 + (udp ? UDP_CSUM : TCP_CSUM), udp, old_addr, op->addr, old_port, op->port);
    return PL_RW_OK;
}

/* ICMP error about a NAT connection (ip_vs_nat_icmp in ip_vs_core.c).  The
 * quoted packet travels the other way from the error: an error going OUT to
 * the client quotes the client's packet as the real server received it
 * (client -> RIP:rport), which must become client -> VIP:vport again; an
 * error coming IN quotes the reply as the client received it (VIP:vport ->
 * client), which must become RIP:rport -> client. */
static int icmp_nat(uint8_t *ip, size_t ihl, size_t total, const struct pl_rewrite_op *op, int out)
{
    if (ip[IP_PROTO] != PROTO_ICMP)
        return PL_RW_NOT_ICMP_ERROR;
    /* The ICMP checksum and the quoted header need the whole message; the
     * kernel reassembles first (ip_vs_gather_frags), we leave that upstream. */
    if (load16(ip + IP_FRAG) & (IP_MF | IP_OFFMASK))
        return PL_RW_FRAGMENTED;
    size_t icmp_len = total - ihl;
    if (icmp_len < ICMP_HEADER)
        return PL_RW_L4_TRUNCATED;
    uint8_t *icmp = ip + ihl;
    if (icmp[0] != ICMP_DEST_UNREACH && icmp[0] != ICMP_SOURCE_QUENCH &&
        icmp[0] != ICMP_TIME_EXCEEDED)
        return PL_RW_NOT_ICMP_ERROR;

    uint8_t *in = icmp + ICMP_HEADER;
    size_t in_len = icmp_len - ICMP_HEADER;
    if (in_len < IP_MIN_HEADER || in[0] >> 4 != IP_VERSION)
        return PL_RW_BAD_EMBEDDED;
    size_t in_ihl = (size_t)(in[0] & 0x0f) * 4;
    if (in_ihl < IP_MIN_HEADER || in_ihl > in_len)
        return PL_RW_BAD_EMBEDDED;
    uint8_t in_proto = in[IP_PROTO];
    /* ip_vs_in_icmp ignores errors about non-first fragments: no ports. */
    if ((in_proto != PROTO_TCP && in_proto != PROTO_UDP) ||
        (load16(in + IP_FRAG) & IP_OFFMASK))
        return PL_RW_NOT_L4;
    size_t quoted_l4 = in_len - in_ihl;
    if (quoted_l4 < L4_PORTS_LEN)
        return PL_RW_BAD_EMBEDDED;
    /* Verify before rewriting, as ip_vs_in_icmp does: recomputing the sum
     * over a corrupted message would make it look valid. */
    if (sum16(icmp, icmp_len) != 0xffff)
        return PL_RW_BAD_CHECKSUM;

    uint8_t *outer = ip + (out ? IP_SRC : IP_DST);
    uint32_t old_outer = load32(outer);
    store32(outer, op->addr);
    store16(ip + IP_CSUM, pl_csum_update32(load16(ip + IP_CSUM), old_outer, op->addr));

    uint8_t *in_addr = in + (out ? IP_DST : IP_SRC);
    uint32_t old_in_addr = load32(in_addr);
    store32(in_addr, op->addr);
    store16(in + IP_CSUM, pl_csum_ipv4_header(in, in_ihl));

    uint8_t *l4 = in + in_ihl;
    uint8_t *port = l4 + (out ? L4_DPORT : L4_SPORT);
    uint16_t old_port = load16(port);
    store16(port, op->port);
    int udp = in_proto == PROTO_UDP;
    size_t csum_at = udp ? UDP_CSUM : TCP_CSUM;
    if (!(op->flags & PL_RWF_KEEP_QUOTED_CSUM) && quoted_l4 >= csum_at + 2)
        l4_csum_update(l4 + csum_at, udp, old_in_addr, op->addr, old_port, op->port);

    store16(icmp + ICMP_CSUM, 0);
    store16(icmp + ICMP_CSUM, (uint16_t)~sum16(icmp, icmp_len));
    return PL_RW_OK;
}

/* IPIP encapsulation as ip_vs_tunnel_xmit (ip_vs_xmit.c) builds it. */
static int tunnel(uint8_t *ip, size_t off, size_t total, const struct pl_rewrite_op *op)
{
    if (off < PL_IPIP_HEADER)
        return PL_RW_NO_ROOM;
    if (total + PL_IPIP_HEADER > IP_MAX_TOTAL)
        return PL_RW_TOO_BIG;
    uint8_t *h = ip - PL_IPIP_HEADER;
    h[0] = IP_VERSION << 4 | PL_IPIP_HEADER / 4;
    h[IP_TOS] = ip[IP_TOS];
    store16(h + IP_TOTLEN, (uint16_t)(total + PL_IPIP_HEADER));
    store16(h + IP_ID, op->id);
    store16(h + IP_FRAG, (op->flags & PL_RWF_COPY_DF) ? (uint16_t)(load16(ip + IP_FRAG) & IP_DF) : 0);
    h[IP_TTL] = ip[IP_TTL];
    h[IP_PROTO] = PROTO_IPIP;
    store32(h + IP_SRC, op->addr2);
    store32(h + IP_DST, op->addr);
    store16(h + IP_CSUM, pl_csum_ipv4_header(h, PL_IPIP_HEADER));
    return PL_RW_OK;
}

/* The ICMP port unreachable of icmp_send(skb, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH). */
static int icmp_unreach(uint8_t *ip, size_t off, size_t total, const struct pl_rewrite_op *op,
                        size_t *new_len)
{
    if (off < PL_ICMP_ERROR_HEADER)
        return PL_RW_NO_ROOM;
    size_t quote = total;
    if (quote > PL_ICMP_ERROR_MAX - PL_ICMP_ERROR_HEADER)
        quote = PL_ICMP_ERROR_MAX - PL_ICMP_ERROR_HEADER;
    uint8_t *h = ip - PL_ICMP_ERROR_HEADER;
    uint8_t *icmp = h + IP_MIN_HEADER;
    uint32_t src = load32(ip + IP_SRC), dst = load32(ip + IP_DST);
    h[0] = IP_VERSION << 4 | IP_MIN_HEADER / 4;
    h[IP_TOS] = ICMP_ERROR_TOS;
    store16(h + IP_TOTLEN, (uint16_t)(PL_ICMP_ERROR_HEADER + quote));
    store16(h + IP_ID, op->id);
    store16(h + IP_FRAG, 0);
    h[IP_TTL] = ICMP_ERROR_TTL;
    h[IP_PROTO] = PROTO_ICMP;
    store32(h + IP_SRC, dst);
    store32(h + IP_DST, src);
    store16(h + IP_CSUM, pl_csum_ipv4_header(h, IP_MIN_HEADER));
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_PORT_UNREACH;
    store16(icmp + ICMP_CSUM, 0);
    store32(icmp + 4, 0); /* unused */
    store16(icmp + ICMP_CSUM, (uint16_t)~sum16(icmp, ICMP_HEADER + quote));
    *new_len = PL_ICMP_ERROR_HEADER + quote;
    return PL_RW_OK;
}

static int rewrite_one(uint8_t *row, size_t stride, uint32_t *off, uint32_t *len,
                       const struct pl_rewrite_op *op)
{
    if (op->kind == PL_OP_NONE)
        return PL_RW_OK;
    if (op->kind >= PL_OP_COUNT)
        return PL_RW_BAD_OP;
    size_t o = *off, n = *len;
    if (o > stride || n > stride - o)
        return PL_RW_BAD_LAYOUT;
    uint8_t *ip = row + o;
    size_t ihl, total;
    int r = check_ipv4(ip, n, &ihl, &total);
    if (r != PL_RW_OK)
        return r;

    switch (op->kind) {
    case PL_OP_NAT_IN:
        r = nat(ip, ihl, total, op, 0);
        break;
    case PL_OP_NAT_OUT:
        r = nat(ip, ihl, total, op, 1);
        break;
    case PL_OP_ICMP_NAT_IN:
        r = icmp_nat(ip, ihl, total, op, 0);
        break;
    case PL_OP_ICMP_NAT_OUT:
        r = icmp_nat(ip, ihl, total, op, 1);
        break;
    case PL_OP_ICMP_UNREACH: {
        size_t new_len = 0;
        r = icmp_unreach(ip, o, total, op, &new_len);
        if (r == PL_RW_OK) {
            *off = (uint32_t)(o - PL_ICMP_ERROR_HEADER);
            *len = (uint32_t)new_len;
        }
        return r;
    }
    default: /* PL_OP_TUNNEL */
        r = tunnel(ip, o, total, op);
        if (r == PL_RW_OK) {
            *off = (uint32_t)(o - PL_IPIP_HEADER);
            *len = (uint32_t)(total + PL_IPIP_HEADER);
        }
        return r;
    }
    if (r == PL_RW_OK)
        *len = (uint32_t)total;
    return r;
}

size_t pl_rewrite_batch(uint8_t *buf, size_t n, size_t stride, uint32_t *off,
                        uint32_t *lens, const struct pl_rewrite_op *ops,
                        uint8_t *res)
{
    size_t done = 0;
    for (size_t i = 0; i < n; i++) {
        int r = rewrite_one(buf + i * stride, stride, &off[i], &lens[i], &ops[i]);
        res[i] = (uint8_t)r;
        if (r == PL_RW_OK && ops[i].kind != PL_OP_NONE)
            done++;
    }
    return done;
}
