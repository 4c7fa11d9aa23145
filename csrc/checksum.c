/* Internet checksum helpers (RFC 1071 sum, RFC 1624 incremental update). */
#include <string.h>
#include <arpa/inet.h>

#include "checksum.h"

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPV4_CSUM_OFFSET 10     /* RFC 791: header checksum at byte 10 */
#define TCP_CSUM_OFFSET 16      /* RFC 793 */
#define UDP_CSUM_OFFSET 6       /* RFC 768 */
#define TCP_MIN_HEADER 20
#define UDP_HEADER 8

/* Sum of big-endian 16-bit words, odd trailing byte padded with zero. */
static uint64_t sum_words(const uint8_t *p, size_t n, uint64_t acc)
{
    while (n >= 2) {
        acc += (uint32_t)p[0] << 8 | p[1];
        p += 2;
        n -= 2;
    }
    if (n)
        acc += (uint32_t)p[0] << 8;
    return acc;
}

static uint16_t fold(uint64_t acc)
{
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

/* Checksum of bytes [0, len) treating the 2 bytes at skip as zero. */
static uint64_t sum_skipping(const uint8_t *p, size_t len, size_t skip, uint64_t acc)
{
    acc = sum_words(p, skip, acc);
    return sum_words(p + skip + 2, len - skip - 2, acc);
}

uint16_t pl_csum_ipv4_header(const uint8_t *ip, size_t header_len)
{
    return (uint16_t)~fold(sum_skipping(ip, header_len, IPV4_CSUM_OFFSET, 0));
}

/* TCP or UDP checksum of an IPv4 packet, pseudo-header included.  The L4
 * length is total length minus the IP header; packet_len bounds the read.
 * Returns 0 for protocols other than TCP and UDP.  A computed UDP checksum of
 * zero is sent as 0xffff (RFC 768: zero means "no checksum"). */
uint16_t pl_csum_l4(const uint8_t *ip, size_t packet_len)
{
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t total = (size_t)ip[2] << 8 | ip[3];
    uint8_t proto = ip[9];
    size_t skip;

    if (total > packet_len)
        total = packet_len;
    if (proto == IPPROTO_TCP_)
        skip = TCP_CSUM_OFFSET;
    else if (proto == IPPROTO_UDP_)
        skip = UDP_CSUM_OFFSET;
    else
        return 0;
    if (total < ihl + skip + 2)
        return 0;

    size_t l4_len = total - ihl;
    uint64_t acc = sum_words(ip + 12, 8, 0); /* source and destination address */
    acc += proto;
    acc += l4_len;
    acc = sum_skipping(ip + ihl, l4_len, skip, acc);
    uint16_t check = (uint16_t)~fold(acc);
    if (proto == IPPROTO_UDP_ && check == 0)
        check = 0xffff;
    return check;
}

/* The folded, uncomplemented sum of the pseudo-header (addresses, protocol, L4 length):
 * what CHECKSUM_PARTIAL leaves in the L4 checksum field for the device to finish. */
uint16_t pl_csum_pseudo(const uint8_t *ip, size_t l4_len)
{
    uint64_t acc = sum_words(ip + 12, 8, 0); /* source and destination address */
    acc += ip[9];
    acc += l4_len;
    return fold(acc);
}

/* The TCP checksum of a segment whose header (thl bytes, an even count; its checksum
 * field taken as zero) and payload lie apart: a segment cut from a bigger one, its
 * header rebuilt elsewhere.  `ip` gives the addresses. */
uint16_t pl_csum_tcp_gather(const uint8_t *ip, const uint8_t *th, size_t thl, const uint8_t *payload, size_t plen)
{
    uint64_t acc = sum_words(ip + 12, 8, 0);
    acc += IPPROTO_TCP_;
    acc += thl + plen;
    acc = sum_skipping(th, thl, TCP_CSUM_OFFSET, acc);
    acc = sum_words(payload, plen, acc);
    return (uint16_t)~fold(acc);
}

/* The Internet checksum of n bytes (an ICMP message, a header with its field zero). */
uint16_t pl_csum(const uint8_t *p, size_t n)
{
    return (uint16_t)~fold(sum_words(p, n, 0));
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'). */
uint16_t pl_csum_update16(uint16_t check, uint16_t old_value, uint16_t new_value)
{
    uint64_t acc = (uint16_t)~check;
    acc += (uint16_t)~old_value;
    acc += new_value;
    return (uint16_t)~fold(acc);
}

uint16_t pl_csum_update32(uint16_t check, uint32_t old_value, uint32_t new_value)
{
    check = pl_csum_update16(check, (uint16_t)(old_value >> 16), (uint16_t)(new_value >> 16));
    return pl_csum_update16(check, (uint16_t)old_value, (uint16_t)new_value);
}

static void store16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Recompute the IPv4 header checksum and, for an unfragmented TCP or UDP
 * packet, the L4 checksum (a UDP checksum of zero stays zero: the sender
 * chose not to use one).  Returns 0, or -1 when the header does not fit. */
int pl_ipv4_fix_checksums(uint8_t *ip, size_t packet_len)
{
    if (packet_len < 20)
        return -1;
    size_t ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t total = (size_t)ip[2] << 8 | ip[3];
    if (ihl < 20 || ihl > packet_len || total < ihl || total > packet_len)
        return -1;
    store16(ip + IPV4_CSUM_OFFSET, pl_csum_ipv4_header(ip, ihl));

    int fragment = ((ip[6] & 0x3f) | ip[7]) != 0; /* MF flag or offset */
    if (fragment)
        return 0;
    uint8_t *l4 = ip + ihl;
    size_t l4_len = total - ihl;
    if (ip[9] == IPPROTO_TCP_ && l4_len >= TCP_MIN_HEADER)
        store16(l4 + TCP_CSUM_OFFSET, pl_csum_l4(ip, total));
    else if (ip[9] == IPPROTO_UDP_ && l4_len >= UDP_HEADER) {
        if (l4[UDP_CSUM_OFFSET] | l4[UDP_CSUM_OFFSET + 1])
            store16(l4 + UDP_CSUM_OFFSET, pl_csum_l4(ip, total));
    }
    return 0;
}

/* ---- checksum completion for CHECKSUM_PARTIAL packets ------------------------------ */

/* One's-complement sum of bytes in memory order, 8 bytes at a time.  The sum is
 * byte-order independent (RFC 1071 section 2(B)): summing native words of
 * big-endian data gives the byte-swapped big-endian sum, stored back as is. */
static uint64_t sum_native(const uint8_t *p, size_t n, uint64_t acc)
{
    uint64_t carry = 0;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        acc += v;
        carry += acc < v;
        p += 8;
        n -= 8;
    }
    while (n >= 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        acc += v;
        carry += acc < v;
        p += 2;
        n -= 2;
    }
    if (n) {
        uint16_t v = 0;
        memcpy(&v, p, 1); /* the odd byte is the high half of a zero-padded word */
        acc += v;
        carry += acc < v;
    }
    acc += carry;
    if (acc < carry)
        acc++;
    return acc;
}

static uint16_t fold_native(uint64_t acc)
{
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffffffffu) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    return (uint16_t)acc;
}

/* The TCP/UDP segment of an unfragmented IPv4 packet: its header length, L4 length and
 * checksum offset; 0 if it is not one (too short, a fragment, another protocol). */
static int l4_of(const uint8_t *ip, size_t len, size_t *ihl, size_t *l4len, size_t *coff)
{
    if (len < 20 || (ip[0] >> 4) != 4)
        return 0;
    *ihl = (size_t)(ip[0] & 0x0f) * 4;
    size_t total = (size_t)ip[2] << 8 | ip[3];
    if (*ihl < 20 || total < *ihl || total > len || (((ip[6] & 0x3f) | ip[7]) != 0))
        return 0; /* ... or MF / an offset: a fragment */
    *l4len = total - *ihl;
    if (ip[9] == IPPROTO_TCP_ && *l4len >= TCP_MIN_HEADER)
        *coff = TCP_CSUM_OFFSET;
    else if (ip[9] == IPPROTO_UDP_ && *l4len >= UDP_HEADER)
        *coff = UDP_CSUM_OFFSET;
    else
        return 0;
    return 1;
}

/* Compute the TCP/UDP checksum of an unfragmented IPv4 packet in full (the
 * kernel leaves only the pseudo-header sum in it for CHECKSUM_PARTIAL).
 * Returns 1 if a checksum was written, 0 if the packet is not one to fix. */
int pl_csum_l4_complete(uint8_t *ip, size_t len)
{
    size_t ihl, l4len, coff;
    if (!l4_of(ip, len, &ihl, &l4len, &coff))
        return 0;
    uint8_t *l4 = ip + ihl;
    l4[coff] = l4[coff + 1] = 0;
    uint64_t acc = sum_native(ip + 12, 8, 0); /* source and destination address */
    acc += htons((uint16_t)ip[9]);
    acc += htons((uint16_t)l4len);
    acc = sum_native(l4, l4len, acc);
    uint16_t check = (uint16_t)~fold_native(acc);
    if (ip[9] == IPPROTO_UDP_ && check == 0)
        check = 0xffff; /* RFC 768: zero means "no checksum" */
    memcpy(l4 + coff, &check, 2);
    return 1;
}

/* 1 if the TCP/UDP checksum of an unfragmented IPv4 packet is the folded pseudo-header
 * sum that CHECKSUM_PARTIAL leaves for the device to finish (include/net/checksum.h:
 * ~csum_tcpudp_magic(saddr, daddr, len, proto, 0)).  A complete checksum that happens to
 * equal it is recomputed to itself, so completing whenever this says 1 is always safe. */
int pl_csum_l4_partial(const uint8_t *ip, size_t len)
{
    size_t ihl, l4len, coff;
    if (!l4_of(ip, len, &ihl, &l4len, &coff))
        return 0;
    const uint8_t *l4 = ip + ihl;
    uint16_t stored = (uint16_t)(l4[coff] << 8 | l4[coff + 1]);
    if (ip[9] == IPPROTO_UDP_ && stored == 0)
        return 0; /* no checksum at all */
    return stored == pl_csum_pseudo(ip, l4len);
}

/* 1 if the TCP/UDP checksum of an unfragmented IPv4 packet verifies (the one's-complement
 * sum over the pseudo-header and the segment, checksum included, is all ones); 0 if not,
 * or if it is not such a packet.  A UDP checksum of 0 (none) verifies. */
int pl_csum_l4_valid(const uint8_t *ip, size_t len)
{
    size_t ihl, l4len, coff;
    if (!l4_of(ip, len, &ihl, &l4len, &coff))
        return 0;
    if (coff == UDP_CSUM_OFFSET && !(ip[ihl + coff] | ip[ihl + coff + 1]))
        return 1; /* UDP without a checksum */
    uint64_t acc = sum_native(ip + 12, 8, 0);
    acc += htons((uint16_t)ip[9]);
    acc += htons((uint16_t)l4len);
    acc = sum_native(ip + ihl, l4len, acc);
    return fold_native(acc) == 0xffff;
}
