/* Receive offload for the frames a batch sends (see gro.h). */
#include <string.h>

#include "checksum.h"
#include "gro.h"

#define IPPROTO_TCP_ 6
#define IPV4_MAX 65535
#define TCP_F_FIN 0x01
#define TCP_F_PSH 0x08
#define TCP_F_ACK 0x10
#define TCP_OFF_SEQ 4
#define TCP_OFF_ACK 8
#define TCP_OFF_FLAGS 13

struct open_frame {             /* a frame still taking segments */
    int32_t head;               /* its first row; -1: the slot is free */
    uint32_t next_seq;          /* the sequence number the next segment must have */
    uint32_t seg;               /* the first segment's payload: the largest that may join */
    uint32_t segs;
};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The row's TCP segment, or NULL: its IP header, header lengths and payload. */
static const uint8_t *tcp_of(const uint8_t *buf, size_t stride, const uint32_t *off, const uint32_t *lens, size_t i,
                             uint32_t *thl, uint32_t *payload)
{
    uint32_t len = lens[i];
    if ((size_t)off[i] + len > stride || len < 40)
        return NULL;
    const uint8_t *ip = buf + i * stride + off[i];
    if (ip[0] != 0x45 || ip[9] != IPPROTO_TCP_ || ((ip[6] & 0x3f) | ip[7]) != 0)
        return NULL; /* options, another protocol, a fragment */
    uint32_t total = (uint32_t)ip[2] << 8 | ip[3];
    uint32_t t = (uint32_t)(ip[20 + 12] >> 4) * 4;
    if (total > len || t < 20 || 20 + t > total)
        return NULL;
    *thl = t;
    *payload = total - 20 - t;
    return ip;
}

static int same_flow(const uint8_t *a, const uint8_t *b)
{
    return memcmp(a + 12, b + 12, 8) == 0 && memcmp(a + 20, b + 20, 4) == 0; /* addresses, ports */
}

/* Whether segment `ip` may follow the frame headed by `h` (same flow, key, thl known). */
static int may_join(const uint8_t *h, const uint8_t *ip, uint32_t thl)
{
    if (h[1] != ip[1] || h[8] != ip[8] || (h[6] & 0x40) != (ip[6] & 0x40))
        return 0; /* TOS, TTL, DF */
    if ((uint32_t)(h[20 + 12] >> 4) * 4 != thl)
        return 0;
    if (memcmp(h + 20 + TCP_OFF_ACK, ip + 20 + TCP_OFF_ACK, 4) != 0)
        return 0;
    return memcmp(h + 40, ip + 40, thl - 20) == 0; /* options, timestamps included */
}

size_t pl_gro_plan(const uint8_t *buf, size_t stride, const uint32_t *off, const uint32_t *lens, const uint8_t *want,
                   const uint64_t *key, const uint16_t *mtu, size_t n, int32_t *group, uint32_t *total)
{
    struct open_frame open[PL_GRO_OPEN];
    size_t next_slot = 0, merged = 0;
    for (size_t s = 0; s < PL_GRO_OPEN; s++)
        open[s].head = -1;
    for (size_t i = 0; i < n; i++) {
        group[i] = (int32_t)i;
        total[i] = 0;
        uint32_t thl, payload;
        const uint8_t *ip = want[i] ? tcp_of(buf, stride, off, lens, i, &thl, &payload) : NULL;
        if (!ip)
            continue;
        total[i] = payload;
        /* the flow's open frame, if any */
        struct open_frame *o = NULL;
        for (size_t s = 0; s < PL_GRO_OPEN && !o; s++) {
            if (open[s].head < 0)
                continue;
            size_t h = (size_t)open[s].head;
            if (same_flow(buf + h * stride + off[h], ip))
                o = &open[s];
        }
        uint8_t fl = ip[20 + TCP_OFF_FLAGS];
        int segment = (fl & TCP_F_ACK) && !(fl & ~(TCP_F_ACK | TCP_F_PSH)) && payload > 0 &&
                      (uint32_t)((ip[2] << 8) | ip[3]) <= mtu[i] && pl_csum_l4_valid(ip, lens[i]);
        if (o && segment) {
            size_t h = (size_t)o->head;
            const uint8_t *hip = buf + h * stride + off[h];
            if (key[h] == key[i] && be32(ip + 20 + TCP_OFF_SEQ) == o->next_seq && payload <= o->seg &&
                o->segs < PL_GRO_MAX_SEGS &&
                20 + thl + total[h] + payload <= IPV4_MAX && may_join(hip, ip, thl)) {
                group[i] = (int32_t)h;
                total[h] += payload;
                total[i] = 0;
                o->next_seq += payload;
                o->segs++;
                merged++;
                if (payload < o->seg || (fl & TCP_F_PSH))
                    o->head = -1; /* the last of its frame, as GRO flushes */
                continue;
            }
        }
        if (o)
            o->head = -1; /* anything else of the flow ends its frame: the bytes stay in order */
        if (!segment || (fl & TCP_F_PSH))
            continue;
        struct open_frame *slot = NULL;
        for (size_t s = 0; s < PL_GRO_OPEN && !slot; s++)
            if (open[s].head < 0)
                slot = &open[s];
        if (!slot) { /* all taken: the oldest opened gives way */
            slot = &open[next_slot];
            next_slot = (next_slot + 1) % PL_GRO_OPEN;
        }
        slot->head = (int32_t)i;
        slot->seg = payload;
        slot->segs = 1;
        slot->next_seq = be32(ip + 20 + TCP_OFF_SEQ) + payload;
    }
    return merged;
}
