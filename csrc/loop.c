/* The forwarding loop in C (see loop.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "loop.h"
#include "nfq.h"
#include "pkt.h"
#include "rewrite.h"
#include "xsk.h"
#include "bpf/xdp_pylvs.h"
#include "checksum.h"
#include "gro.h"

#define ETH_HLEN_ 14
#define IP_SADDR_OFF 12
#define IP_DADDR_OFF 16
#define IP_DF 0x40             /* in byte 6 (RFC 791) */
#define IPV4_HEADER 20
#define IPIP_HEADER 20         /* the outer header a tunnel adds */
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_QUOTE 8           /* bytes of the offending datagram after its header (RFC 792) */
#define IPPROTO_TCP_ 6
#define TCP_CSUM_OFF 16         /* RFC 793 */
#define TCP_FLAGS_OFF 13
#define TCP_FLAG_CWR 0x80
#define SOL_PACKET_ 263
#define PACKET_VNET_HDR_ 15
/* struct virtio_net_hdr (linux/virtio_net.h, pkt.h), in front of every frame we send: it
 * lets a direct-routing GSO super-packet leave whole, the kernel cutting it to the MTU. */
#define VNET_F_NEEDS_CSUM PL_VNET_F_NEEDS_CSUM
#define VNET_GSO_NONE PL_VNET_GSO_NONE
#define VNET_GSO_TCPV4 PL_VNET_GSO_TCPV4
#define VNET_GSO_ECN PL_VNET_GSO_ECN
#define vnet_hdr pl_vnet_hdr
#define VNET_HLEN ((uint32_t)PL_VNET_HLEN)
#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_PSH 0x08
/* AF_PACKET: a tunnelled TCP packet too big for the out MTU leaves as segments built
 * here, TSO_CHUNK per sendmmsg, each with its headers (at most TSO_HDR_MAX bytes) in
 * loop scratch and its payload read from the row. */
#define TSO_CHUNK 64
#define TSO_HDR_MAX (PL_VNET_HLEN + ETH_HLEN_ + IPIP_HEADER + 60 + 60)

/* ---- the gate -------------------------------------------------------------------- */

struct pl_gate {
    pthread_mutex_t mu;
    pthread_mutex_t turnstile;
    atomic_int waiting;
};

struct pl_gate *pl_gate_new(void)
{
    struct pl_gate *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->turnstile, NULL);
    atomic_init(&g->waiting, 0);
    return g;
}

void pl_gate_free(struct pl_gate *g)
{
    if (!g)
        return;
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->turnstile);
    free(g);
}

void pl_gate_enter(struct pl_gate *g)
{
    atomic_fetch_add(&g->waiting, 1);
    pthread_mutex_lock(&g->turnstile);
    pthread_mutex_lock(&g->mu);
}

void pl_gate_leave(struct pl_gate *g)
{
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_unlock(&g->turnstile);
    atomic_fetch_sub(&g->waiting, 1);
}

void pl_gate_batch_enter(struct pl_gate *g)
{
    if (atomic_load_explicit(&g->waiting, memory_order_relaxed)) {
        /* a control thread wants in: queue behind it rather than re-take the mutex */
        pthread_mutex_lock(&g->turnstile);
        pthread_mutex_unlock(&g->turnstile);
    }
    pthread_mutex_lock(&g->mu);
}

void pl_gate_batch_leave(struct pl_gate *g)
{
    pthread_mutex_unlock(&g->mu);
}

/* ---- one batch through the engine ------------------------------------------------- */

double pl_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* what Python's time.monotonic() reads */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t pl_engine_batch(const struct pl_fwd *f, const struct pl_batch *b, size_t n, double now)
{
    if (n > b->rows)
        return -EINVAL;
    int64_t budget = f->sweep_per_packet * (int64_t)n + f->sweep_base;
    int64_t n_ops = f->engine(f->state, b->desc, (int64_t)n, now, (int64_t)(now * 1000.0), f->opts, budget,
                              f->tunnel_src);
    memset(b->res, PL_RW_OK, n);
    if (n_ops <= 0)
        return n_ops;
    size_t done = pl_rewrite_batch(b->buf, n, b->stride, b->off, b->lens, b->ops, b->res);
    if (done == (size_t)n_ops)
        return n_ops;
    for (size_t i = 0; i < n; i++) {
        if (b->ops[i].kind == PL_OP_NONE || b->res[i] == PL_RW_OK)
            continue;
        /* the packet was counted as forwarded: count it as the rewrite's drop instead */
        f->reasons[b->reason[i]]--;
        int16_t r = (int16_t)(f->rewrite_base + b->res[i]);
        f->reasons[r]++;
        b->reason[i] = r;
        b->verdict[i] = PL_V_DROP;
    }
    return n_ops;
}

/* ---- the loop ------------------------------------------------------------------------ */

enum { OUT_NONE, OUT_FRAME, OUT_ROUTE, OUT_REPLY };   /* how a packet leaves, decided under the gate */

struct pl_loop {
    struct pl_nfq *q;           /* one source: an NFQUEUE queue ... */
    struct pl_xsk *const *xs;   /* ... or AF_XDP sockets ... */
    size_t n_xs;
    struct pl_pkt *pk;          /* ... or an AF_PACKET tap */
    struct pl_pkt_frame *fr;    /* AF_PACKET: each frame's virtio-net header, MACs, device */
    struct pl_pkt_stats pst;
    uint32_t spin_us;           /* AF_XDP busy polling (pl_loop_set_spin) */
    struct pl_gate *g;
    const struct pl_fwd *f;
    struct pl_batch b;
    uint32_t flags;
    uint32_t *ids;
    uint8_t *info;
    uint8_t *acts;              /* NFQUEUE verdicts */
    uint8_t *how;               /* OUT_* per row */
    struct pl_xsk_meta *meta;   /* AF_XDP: what the program said of each frame */
    struct pl_neigh *hops;      /* per row: the next hop a frame leaves by (copied under the gate) */
    struct mmsghdr *mmsg;       /* per row: the frames of a batch, one sendmmsg */
    struct iovec *siov;
    struct sockaddr_ll *sll;
    int pkt_fd;                 /* AF_PACKET, send only: frames */
    int raw_fd;                 /* AF_INET raw, IP_HDRINCL: through the kernel's routing */
    atomic_int stop;
    int64_t misses[PL_LOOP_MISS_MAX];
    size_t n_misses;
    struct pl_loop_stats st;
    struct pl_xsk_stats xst;
    /* AF_XDP: segments merged into super-packets (gro.h), per row */
    uint8_t *gro_want;
    uint64_t *gro_key;
    uint16_t *gro_mtu;
    int32_t *gro_group, *gro_next, *gro_last;
    uint32_t *gro_total;
    struct iovec *giov;         /* 2 per row: a frame's headers, then each segment's payload */
    uint16_t *msg_pkts;         /* per queued message: the packets it carries */
    /* AF_PACKET: the segments of one tunnelled packet cut here (tunnel_tso) */
    uint8_t tso_hdr[TSO_CHUNK][TSO_HDR_MAX];
    struct iovec tso_iov[2 * TSO_CHUNK];
    struct mmsghdr tso_mmsg[TSO_CHUNK];
    struct sockaddr_ll tso_sll;
};

static struct pl_loop *loop_new(struct pl_gate *g, const struct pl_fwd *f, const struct pl_batch *b,
                                uint32_t flags, int *err)
{
    struct pl_loop *L = calloc(1, sizeof(*L));
    int e = ENOMEM;
    if (!L)
        goto fail;
    L->pkt_fd = L->raw_fd = -1;
    L->g = g;
    L->f = f;
    L->b = *b;
    L->flags = flags;
    L->ids = calloc(b->rows, sizeof(*L->ids));
    L->info = calloc(b->rows, 1);
    L->acts = calloc(b->rows, 1);
    L->how = calloc(b->rows, 1);
    L->meta = calloc(b->rows, sizeof(*L->meta));
    L->hops = calloc(b->rows, sizeof(*L->hops));
    L->mmsg = calloc(b->rows, sizeof(*L->mmsg));
    L->siov = calloc(b->rows, sizeof(*L->siov));
    L->sll = calloc(b->rows, sizeof(*L->sll));
    L->gro_want = calloc(b->rows, 1);
    L->gro_key = calloc(b->rows, sizeof(*L->gro_key));
    L->gro_mtu = calloc(b->rows, sizeof(*L->gro_mtu));
    L->gro_group = calloc(b->rows, sizeof(*L->gro_group));
    L->gro_next = calloc(b->rows, sizeof(*L->gro_next));
    L->gro_last = calloc(b->rows, sizeof(*L->gro_last));
    L->gro_total = calloc(b->rows, sizeof(*L->gro_total));
    L->giov = calloc(2 * b->rows, sizeof(*L->giov));
    L->msg_pkts = calloc(b->rows, sizeof(*L->msg_pkts));
    L->fr = calloc(b->rows, sizeof(*L->fr));
    if (!L->fr || !L->ids || !L->info || !L->acts || !L->how || !L->meta || !L->hops || !L->mmsg || !L->siov || !L->sll ||
        !L->gro_want || !L->gro_key || !L->gro_mtu || !L->gro_group || !L->gro_next || !L->gro_last ||
        !L->gro_total || !L->giov || !L->msg_pkts)
        goto fail;
    /* protocol 0: a send-only packet socket, never queued a received frame */
    L->pkt_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    L->raw_fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    int one = 1;
    if (L->pkt_fd < 0 || L->raw_fd < 0 ||
        setsockopt(L->pkt_fd, SOL_PACKET_, PACKET_VNET_HDR_, &one, sizeof(one)) < 0) {
        e = errno;
        goto fail;
    }
    atomic_init(&L->stop, 0);
    return L;
fail:
    if (err)
        *err = e;
    pl_loop_free(L);
    return NULL;
}

struct pl_loop *pl_nfq_loop_new(struct pl_nfq *q, struct pl_gate *g, const struct pl_fwd *f,
                                const struct pl_batch *b, uint32_t flags, int *err)
{
    struct pl_loop *L = loop_new(g, f, b, flags, err);
    if (L)
        L->q = q;
    return L;
}

struct pl_loop *pl_xsk_loop_new(struct pl_xsk *const *xs, size_t n_xs, struct pl_gate *g, const struct pl_fwd *f,
                                const struct pl_batch *b, uint32_t flags, int *err)
{
    if (n_xs == 0) {
        if (err)
            *err = EINVAL;
        return NULL;
    }
    struct pl_loop *L = loop_new(g, f, b, flags, err);
    if (L) {
        L->xs = xs;
        L->n_xs = n_xs;
    }
    return L;
}

struct pl_loop *pl_pkt_loop_new(struct pl_pkt *pk, struct pl_gate *g, const struct pl_fwd *f,
                                const struct pl_batch *b, uint32_t flags, int *err)
{
    struct pl_loop *L = loop_new(g, f, b, flags, err);
    if (L)
        L->pk = pk;
    return L;
}

void pl_loop_free(struct pl_loop *L)
{
    if (!L)
        return;
    if (L->pkt_fd >= 0)
        close(L->pkt_fd);
    if (L->raw_fd >= 0)
        close(L->raw_fd);
    free(L->ids);
    free(L->info);
    free(L->acts);
    free(L->how);
    free(L->meta);
    free(L->hops);
    free(L->mmsg);
    free(L->siov);
    free(L->sll);
    free(L->gro_want);
    free(L->gro_key);
    free(L->gro_mtu);
    free(L->gro_group);
    free(L->gro_next);
    free(L->gro_last);
    free(L->gro_total);
    free(L->giov);
    free(L->msg_pkts);
    free(L->fr);
    free(L);
}

void pl_loop_set_spin(struct pl_loop *L, uint32_t usec)
{
    L->spin_us = usec;
}

void pl_loop_stop(struct pl_loop *L)
{
    atomic_store(&L->stop, 1);
}

void pl_loop_get_stats(const struct pl_loop *L, struct pl_loop_stats *out)
{
    *out = L->st; /* a torn read of a counter is harmless for a status view */
}

void pl_loop_get_xsk_stats(const struct pl_loop *L, struct pl_xsk_stats *out)
{
    *out = L->xst;
}

void pl_loop_get_pkt_stats(const struct pl_loop *L, struct pl_pkt_stats *out)
{
    *out = L->pst;
}

size_t pl_loop_misses(struct pl_loop *L, int64_t *rows, size_t max)
{
    size_t k = L->n_misses < max ? L->n_misses : max;
    memcpy(rows, L->misses, k * sizeof(*rows));
    L->n_misses = 0;
    return k;
}

static void note_miss(struct pl_loop *L, int64_t row)
{
    for (size_t j = 0; j < L->n_misses; j++)
        if (L->misses[j] == row)
            return;
    if (L->n_misses < PL_LOOP_MISS_MAX)
        L->misses[L->n_misses++] = row;
}

/* The virtio-net header for a frame of `len` IP bytes at `ip`: none for one that fits
 * the MTU; for a TCP super-packet (a GSO queue hands them over whole) the segment size and
 * the checksum work the kernel does while it cuts it, with the TCP checksum field set back
 * to the pseudo-header sum that CHECKSUM_PARTIAL expects; segments of at most seg_max
 * payload bytes when it is not 0.  0, or -1 when it cannot leave. */
static int vnet_for(uint8_t *ip, uint32_t len, uint32_t mtu, uint32_t seg_max, struct vnet_hdr *v)
{
    memset(v, 0, sizeof(*v));
    if (len <= mtu)
        return 0;
    uint32_t ihl = (uint32_t)(ip[0] & 0x0f) * 4;
    if (ip[9] != IPPROTO_TCP_ || ihl < 20 || len < ihl + 20 || (((ip[6] & 0x3f) | ip[7]) != 0))
        return -1; /* only TCP can be cut (UDP would need fragments): too big */
    uint32_t thl = (uint32_t)(ip[ihl + 12] >> 4) * 4;
    if (thl < 20 || ihl + thl >= len || ihl + thl >= mtu)
        return -1;
    uint8_t *th = ip + ihl;
    v->flags = VNET_F_NEEDS_CSUM;
    v->gso_type = VNET_GSO_TCPV4 | ((th[TCP_FLAGS_OFF] & TCP_FLAG_CWR) ? VNET_GSO_ECN : 0);
    v->hdr_len = (uint16_t)(ETH_HLEN_ + ihl + thl);
    uint32_t seg = mtu - ihl - thl;
    v->gso_size = (uint16_t)(seg_max && seg_max < seg ? seg_max : seg);
    v->csum_start = (uint16_t)(ETH_HLEN_ + ihl);
    v->csum_offset = TCP_CSUM_OFF;
    uint16_t sum = pl_csum_pseudo(ip, len - ihl);
    th[TCP_CSUM_OFF] = (uint8_t)(sum >> 8);
    th[TCP_CSUM_OFF + 1] = (uint8_t)sum;
    return 0;
}

/* ip_vs_tunnel_xmit's answer to a tunnel packet that no longer fits: ICMP "fragmentation
 * needed" with the tunnel's MTU, from the packet's destination (the VIP) to its source,
 * sent through the kernel's routing.  `inner` is the client's packet (after the outer
 * header the engine put in front).  0 if sent. */
static int send_frag_needed(struct pl_loop *L, const uint8_t *inner, uint32_t inner_len, uint32_t mtu)
{
    uint32_t ihl = (uint32_t)(inner[0] & 0x0f) * 4;
    if (ihl < IPV4_HEADER || ihl > inner_len)
        return -1;
    uint32_t quote = ihl + ICMP_QUOTE <= inner_len ? ihl + ICMP_QUOTE : inner_len;
    uint8_t pkt[IPV4_HEADER + 8 + 60 + ICMP_QUOTE];
    uint32_t len = IPV4_HEADER + 8 + quote;
    memset(pkt, 0, sizeof(pkt));
    pkt[0] = 0x45;
    pkt[2] = (uint8_t)(len >> 8);
    pkt[3] = (uint8_t)len;
    pkt[8] = 64; /* TTL */
    pkt[9] = 1;  /* ICMP */
    memcpy(pkt + IP_SADDR_OFF, inner + IP_DADDR_OFF, 4);
    memcpy(pkt + IP_DADDR_OFF, inner + IP_SADDR_OFF, 4);
    uint16_t c = pl_csum_ipv4_header(pkt, IPV4_HEADER);
    pkt[10] = (uint8_t)(c >> 8);
    pkt[11] = (uint8_t)c;
    uint8_t *icmp = pkt + IPV4_HEADER;
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = ICMP_FRAG_NEEDED;
    icmp[6] = (uint8_t)(mtu >> 8);
    icmp[7] = (uint8_t)mtu;
    memcpy(icmp + 8, inner, quote);
    c = pl_csum(icmp, 8 + quote);
    icmp[2] = (uint8_t)(c >> 8);
    icmp[3] = (uint8_t)c;
    struct sockaddr_in to = {.sin_family = AF_INET};
    memcpy(&to.sin_addr, pkt + IP_DADDR_OFF, 4);
    return sendto(L->raw_fd, pkt, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof(to)) < 0 ? -1 : 0;
}

/* Put the Ethernet header toward `nh` and the virtio-net header `v` in front of the IP
 * packet at `ip`, and queue message k to `nh` with iovecs iov[0..cnt) (iov[0] must
 * start at the returned frame) carrying `pkts` packets.  Returns the frame start. */
static uint8_t *frame_head(uint8_t *ip, const struct pl_neigh *nh, const struct vnet_hdr *v)
{
    uint8_t *eth = ip - ETH_HLEN_;
    memcpy(eth, nh->dst, 6);
    memcpy(eth + 6, nh->src, 6);
    eth[12] = 0x08; /* ETH_P_IP */
    eth[13] = 0x00;
    uint8_t *frame = eth - VNET_HLEN;
    memcpy(frame, v, VNET_HLEN);
    return frame;
}

/* The AF_PACKET address of next hop `nh`: its device and MAC. */
static void sll_to(struct sockaddr_ll *sll, const struct pl_neigh *nh)
{
    memset(sll, 0, sizeof(*sll));
    sll->sll_family = AF_PACKET;
    sll->sll_protocol = htons(ETH_P_IP);
    sll->sll_ifindex = nh->ifindex;
    sll->sll_halen = 6;
    memcpy(sll->sll_addr, nh->dst, 6);
}

static void queue_msg(struct pl_loop *L, size_t k, const struct pl_neigh *nh, struct iovec *iov, size_t cnt,
                      uint16_t pkts)
{
    struct sockaddr_ll *sll = &L->sll[k];
    sll_to(sll, nh);
    memset(&L->mmsg[k], 0, sizeof(L->mmsg[k]));
    struct msghdr *m = &L->mmsg[k].msg_hdr;
    m->msg_name = sll;
    m->msg_namelen = sizeof(*sll);
    m->msg_iov = iov;
    m->msg_iovlen = cnt;
    L->msg_pkts[k] = pkts;
}

/* Frame packet i for the next hop copied for it under the gate (hops[i]) and queue it
 * in the batch's sendmmsg (L->mmsg); 0 when it is queued, else why not (counted). */
static int frame_out(struct pl_loop *L, size_t i, size_t k)
{
    const struct pl_neigh *nh = &L->hops[i];
    uint32_t off = L->b.off[i], len = L->b.lens[i];
    if (off < ETH_HLEN_ + VNET_HLEN || (size_t)off + len > L->b.stride || len < 20) {
        L->st.send_errors++;
        return -1;
    }
    uint8_t *ip = L->b.buf + i * L->b.stride + off;
    struct vnet_hdr v;
    /* AF_PACKET: a super-packet is cut no coarser than its sender cut it (its MSS) */
    uint32_t seg_max = L->pk && L->fr[i].vnet.gso_type != VNET_GSO_NONE ? L->fr[i].vnet.gso_size : 0;
    if (vnet_for(ip, len, nh->mtu, seg_max, &v) < 0) {
        if (L->b.verdict[i] == PL_V_TUNNEL && len > IPIP_HEADER + IPV4_HEADER &&
            (ip[IPIP_HEADER + 6] & IP_DF) && nh->mtu > IPIP_HEADER + IPV4_HEADER) {
            if (send_frag_needed(L, ip + IPIP_HEADER, len - IPIP_HEADER, nh->mtu - IPIP_HEADER) == 0)
                L->st.frag_needed++;
            else
                L->st.send_errors++;
        } else {
            L->st.too_big++;
        }
        return -1;
    }
    if (v.gso_type != VNET_GSO_NONE)
        L->st.gso++;
    L->siov[k].iov_base = frame_head(ip, nh, &v);
    L->siov[k].iov_len = VNET_HLEN + ETH_HLEN_ + len;
    queue_msg(L, k, nh, &L->siov[k], 1, 1);
    return 0;
}

/* Send the k queued frames in as few sendmmsg calls as the socket takes.  A frame the
 * kernel refuses is counted and skipped; a full buffer (MSG_DONTWAIT) drops and counts
 * the rest of the batch: never a wait. */
static void flush_frames(struct pl_loop *L, size_t k)
{
    size_t done = 0;
    while (done < k) {
        int r = sendmmsg(L->pkt_fd, L->mmsg + done, (unsigned)(k - done), MSG_DONTWAIT);
        if (r > 0) {
            for (size_t j = done; j < done + (size_t)r; j++)
                L->st.sent += L->msg_pkts[j];
            done += (size_t)r;
        } else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
            L->st.send_errors += L->msg_pkts[done]; /* this frame, every segment in it */
            done++;
        } else {
            for (size_t j = done; j < k; j++)
                L->st.send_errors += L->msg_pkts[j];
            return;
        }
    }
}

/* Packet i through the kernel's routing (raw IP): an ICMP error from the VIP, or a NAT
 * reply the XDP program found no next hop for. */
static void send_routed(struct pl_loop *L, size_t i)
{
    int reject = L->b.verdict[i] == PL_V_REJECT;
    uint32_t off = L->b.off[i], len = L->b.lens[i];
    const uint8_t *pkt = L->b.buf + i * L->b.stride + off;
    struct sockaddr_in to = {.sin_family = AF_INET};
    int ok = len >= 20 && (size_t)off + len <= L->b.stride;
    if (ok) {
        memcpy(&to.sin_addr, pkt + IP_DADDR_OFF, 4);
        ok = sendto(L->raw_fd, pkt, len, MSG_DONTWAIT, (struct sockaddr *)&to, sizeof(to)) >= 0;
    }
    if (reject)
        ok ? L->st.rejected++ : L->st.reject_send_errors++;
    else
        ok ? L->st.routed++ : L->st.route_errors++;
}

/* The next hop of dest row `row` into hops[i]; 0, or -1 (counted, noted) without one. */
static int row_hop(struct pl_loop *L, size_t i, int64_t row)
{
    const struct pl_fwd *f = L->f;
    if (row >= 0 && (size_t)row < f->n_neigh && f->neigh[row].ifindex > 0) {
        L->hops[i] = f->neigh[row];
        return 0;
    }
    L->st.no_next_hop++;
    note_miss(L, row);
    return -1;
}

/* NFQUEUE: the verdict of each packet, and how it leaves; the gate held. */
static void act_nfq(struct pl_loop *L, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t a = PL_NFQ_DROP, how = OUT_NONE;
        switch (L->b.verdict[i]) {
        case PL_V_PASS:
            a = PL_NFQ_ACCEPT;
            L->st.accepted++;
            break;
        case PL_V_NAT:
        case PL_V_TUNNEL:
            a = PL_NFQ_ACCEPT_PAYLOAD;
            L->st.mangled++;
            break;
        case PL_V_DR:
            if (row_hop(L, i, L->b.dest_row[i]) == 0)
                how = OUT_FRAME;
            L->st.dropped++;
            break;
        case PL_V_REJECT:
            how = OUT_ROUTE;
            L->st.dropped++;
            break;
        default: /* PL_V_DROP; never forward the unknown */
            L->st.dropped++;
            break;
        }
        L->acts[i] = a;
        L->how[i] = how;
    }
}

/* AF_XDP: how each packet leaves; the gate held.  What the program found the kernel
 * would forward (a real server's packet, meta FROM_SERVER*) is forwarded here, with the
 * TTL the kernel's forwarding would take off (info[i] = 1): rewritten (NAT reply) or,
 * when the engine passes it (not one of ours: the server's own traffic), as it came. */
static void act_xsk(struct pl_loop *L, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t how = OUT_NONE;
        const struct pl_xsk_meta *m = &L->meta[i];
        int routed = m->kind == PL_XDP_FROM_SERVER || m->kind == PL_XDP_FROM_SERVER_ROUTE;
        L->info[i] = (uint8_t)routed;
        switch (L->b.verdict[i]) {
        case PL_V_NAT:
        case PL_V_PASS:
            if (m->kind == PL_XDP_FROM_SERVER && m->ifindex > 0) {
                struct pl_neigh *nh = &L->hops[i];
                nh->ifindex = (int32_t)m->ifindex;
                nh->mtu = 0xffff; /* the route lookup checked the size */
                memcpy(nh->dst, m->dst, 6);
                memcpy(nh->src, m->src, 6);
                how = OUT_FRAME;
            } else if (routed) {
                how = OUT_ROUTE;
            } else if (L->b.verdict[i] == PL_V_PASS) {
                L->st.unpassed++;
            } else if (row_hop(L, i, L->b.dest_row[i]) == 0) {
                how = OUT_FRAME;
            }
            break;
        case PL_V_DR:
        case PL_V_TUNNEL:
            if (row_hop(L, i, L->b.dest_row[i]) == 0)
                how = OUT_FRAME;
            break;
        case PL_V_REJECT:
            how = OUT_ROUTE;
            break;
        default:
            break;
        }
        L->how[i] = how;
    }
}

/* AF_PACKET: how each packet leaves; the gate held.  The tap took a copy: the kernel
 * keeps its own of what the engine passes (the netdev ingress rule drops only service
 * traffic), so PASS is done with. */
static void act_pkt(struct pl_loop *L, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t how = OUT_NONE;
        switch (L->b.verdict[i]) {
        case PL_V_PASS:
            L->st.accepted++;
            break;
        case PL_V_NAT: /* sent on like DR: routing NAT is NFQUEUE's job (the director refuses it here) */
        case PL_V_DR:
        case PL_V_TUNNEL:
            if (row_hop(L, i, L->b.dest_row[i]) == 0)
                how = OUT_FRAME;
            break;
        case PL_V_REJECT: { /* back the way it came: to the frame's sender, from the MAC it was sent to */
            struct pl_neigh *nh = &L->hops[i];
            const struct pl_pkt_frame *fr = &L->fr[i];
            nh->ifindex = fr->ifindex;
            nh->mtu = 0xffff; /* the engine cut the ICMP error to 576 bytes */
            memcpy(nh->dst, fr->src, 6);
            memcpy(nh->src, fr->dst, 6);
            how = OUT_REPLY;
            break;
        }
        default:
            L->st.dropped++;
            break;
        }
        L->how[i] = how;
    }
}

/* AF_PACKET: an ICMP error the engine made (V_REJECT) to the frame's sender; rare, so one
 * send of its own, counted as rejected rather than among the forwarded frames. */
static void send_reply(struct pl_loop *L, size_t i)
{
    const struct pl_neigh *nh = &L->hops[i];
    uint32_t off = L->b.off[i], len = L->b.lens[i];
    int ok = off >= ETH_HLEN_ + VNET_HLEN && (size_t)off + len <= L->b.stride && nh->ifindex > 0;
    if (ok) {
        struct vnet_hdr v;
        memset(&v, 0, sizeof(v));
        uint8_t *frame = frame_head(L->b.buf + i * L->b.stride + off, nh, &v);
        struct sockaddr_ll sll;
        sll_to(&sll, nh);
        ok = sendto(L->pkt_fd, frame, VNET_HLEN + ETH_HLEN_ + len, MSG_DONTWAIT, (struct sockaddr *)&sll,
                    sizeof(sll)) >= 0;
    }
    ok ? L->st.rejected++ : L->st.reject_send_errors++;
}

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* AF_PACKET: a tunnelled TCP packet bigger than its hop's MTU (a GSO super-packet, or a
 * full-size segment the outer header made 20 bytes too big) cut into segments that fit
 * the tunnel, each a frame with every checksum complete: what the kernel's IPIP GSO does,
 * with the segment size lowered to fit (receivers take any segmentation).  Sequence
 * numbers advance, FIN and PSH ride on the last segment only, CWR on the first only, IP
 * ids count up (tcp4_gso_segment, inet_gso_segment).  0 when done (sent or counted), -1
 * when it is not a TCP packet that can be cut (the caller sends ICMP or counts it). */
static int tunnel_tso(struct pl_loop *L, size_t i)
{
    const struct pl_neigh *nh = &L->hops[i];
    uint32_t len = L->b.lens[i], off = L->b.off[i];
    if ((size_t)off + len > L->b.stride || len < IPIP_HEADER + IPV4_HEADER + 20)
        return -1;
    const uint8_t *outer = L->b.buf + i * L->b.stride + off;
    const uint8_t *inner = outer + IPIP_HEADER;
    uint32_t total = len - IPIP_HEADER, ihl = (uint32_t)(inner[0] & 0x0f) * 4;
    if (inner[9] != IPPROTO_TCP_ || ihl < IPV4_HEADER || total < ihl + 20 || (((inner[6] & 0x3f) | inner[7]) != 0))
        return -1;
    uint32_t thl = (uint32_t)(inner[ihl + 12] >> 4) * 4, h = ihl + thl;
    int64_t seg = (int64_t)nh->mtu - IPIP_HEADER - h;
    const struct pl_vnet_hdr *got = &L->fr[i].vnet;
    if (got->gso_type != VNET_GSO_NONE && got->gso_size && got->gso_size < seg)
        seg = got->gso_size;
    if (thl < 20 || h >= total || seg <= 0) {
        L->st.too_big++;
        return 0;
    }
    const uint8_t *th = inner + ihl;
    uint32_t seq0 = (uint32_t)th[4] << 24 | (uint32_t)th[5] << 16 | (uint32_t)th[6] << 8 | th[7];
    uint32_t id_out = (uint32_t)(outer[4] << 8 | outer[5]), id_in = (uint32_t)(inner[4] << 8 | inner[5]);
    uint8_t flags0 = th[TCP_FLAGS_OFF];
    struct sockaddr_ll *sll = &L->tso_sll;
    sll_to(sll, nh);
    struct vnet_hdr none; /* nothing left for the kernel to do */
    memset(&none, 0, sizeof(none));
    uint32_t start = h, idx = 0;
    int failed = 0;
    while (start < total && !failed) {
        size_t c = 0;
        for (; c < TSO_CHUNK && start < total; c++, idx++, start += (uint32_t)seg) {
            uint32_t end = start + (uint32_t)seg < total ? start + (uint32_t)seg : total;
            uint32_t plen = end - start, n_inner = h + plen;
            uint8_t *o = L->tso_hdr[c] + VNET_HLEN + ETH_HLEN_, *ip = o + IPIP_HEADER, *t = ip + ihl;
            uint8_t *f = frame_head(o, nh, &none);
            memcpy(o, outer, IPIP_HEADER);
            memcpy(ip, inner, h);
            put16(o + 2, IPIP_HEADER + n_inner);
            put16(o + 4, id_out + idx);
            put16(o + 10, pl_csum_ipv4_header(o, IPIP_HEADER));
            put16(ip + 2, n_inner);
            put16(ip + 4, id_in + idx);
            put16(ip + 10, pl_csum_ipv4_header(ip, ihl));
            uint32_t seq = seq0 + (start - h);
            put16(t + 4, seq >> 16);
            put16(t + 6, seq);
            uint8_t fl = flags0;
            if (end < total)
                fl &= (uint8_t)~(TCP_FLAG_FIN | TCP_FLAG_PSH);
            if (idx)
                fl &= (uint8_t)~TCP_FLAG_CWR;
            t[TCP_FLAGS_OFF] = fl;
            put16(t + TCP_CSUM_OFF, pl_csum_tcp_gather(ip, t, thl, inner + start, plen));
            L->tso_iov[2 * c] = (struct iovec){.iov_base = f, .iov_len = VNET_HLEN + ETH_HLEN_ + IPIP_HEADER + h};
            L->tso_iov[2 * c + 1] = (struct iovec){.iov_base = (void *)(inner + start), .iov_len = plen};
            memset(&L->tso_mmsg[c], 0, sizeof(L->tso_mmsg[c]));
            struct msghdr *m = &L->tso_mmsg[c].msg_hdr;
            m->msg_name = sll;
            m->msg_namelen = sizeof(*sll);
            m->msg_iov = &L->tso_iov[2 * c];
            m->msg_iovlen = 2;
        }
        size_t done = 0;
        while (done < c) {
            int r = sendmmsg(L->pkt_fd, L->tso_mmsg + done, (unsigned)(c - done), MSG_DONTWAIT);
            if (r <= 0) {
                failed = 1;
                break;
            }
            done += (size_t)r;
        }
        L->st.tso_segments += done;
    }
    if (failed)
        L->st.send_errors++;
    else
        L->st.sent++;
    return 0;
}

/* AF_PACKET: packet i leaves whole (queued as a frame); a GSO super-packet that now fits
 * the MTU still holds its pseudo-header sum (pkt.h), so its checksum is finished here. */
static void pkt_finish(struct pl_loop *L, size_t i)
{
    uint32_t len = L->b.lens[i], off = L->b.off[i];
    if (L->fr[i].vnet.gso_type == VNET_GSO_NONE || len > L->hops[i].mtu || (size_t)off + len > L->b.stride)
        return;
    uint8_t *ip = L->b.buf + i * L->b.stride + off;
    if (L->b.verdict[i] == PL_V_TUNNEL && len > IPIP_HEADER)
        pl_csum_l4_complete(ip + IPIP_HEADER, len - IPIP_HEADER);
    else
        pl_csum_l4_complete(ip, len);
}

/* A forwarded packet's hop: TTL 1 or 0 ends here (counted; the kernel would also send
 * ICMP time exceeded), else the TTL goes down by one and the header checksum follows
 * (RFC 1624).  0 if it may leave. */
static int forward_ttl(struct pl_loop *L, size_t i)
{
    uint32_t len = L->b.lens[i];
    uint8_t *ip = L->b.buf + i * L->b.stride + L->b.off[i];
    if (len < IPV4_HEADER || (size_t)L->b.off[i] + len > L->b.stride)
        return -1;
    if (ip[8] <= 1) {
        L->st.ttl_expired++;
        return -1;
    }
    uint16_t old = (uint16_t)(ip[8] << 8 | ip[9]);
    ip[8]--;
    uint16_t c = pl_csum_update16((uint16_t)(ip[10] << 8 | ip[11]), old, (uint16_t)(ip[8] << 8 | ip[9]));
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    return 0;
}

/* Frame the super-packet that row h heads (gro.h): its headers say the whole length, the
 * TCP checksum is left for the kernel (virtio-net NEEDS_CSUM) and the segment size is
 * h's payload; the members' payloads follow as iovecs.  Queued as message k, its iovecs
 * from giov[*iov_used]; 0, or -1 (counted) when it cannot leave. */
static int frame_gro(struct pl_loop *L, size_t h, size_t k, size_t *iov_used)
{
    const struct pl_neigh *nh = &L->hops[h];
    uint32_t off = L->b.off[h];
    uint8_t *ip = L->b.buf + h * L->b.stride + off;
    uint32_t thl = (uint32_t)(ip[IPV4_HEADER + 12] >> 4) * 4;
    uint32_t own = (uint32_t)(ip[2] << 8 | ip[3]) - IPV4_HEADER - thl;
    uint32_t total = IPV4_HEADER + thl + L->gro_total[h];
    uint8_t *th = ip + IPV4_HEADER;
    if (off < ETH_HLEN_ + VNET_HLEN) {
        L->st.send_errors++;
        return -1;
    }
    for (int32_t m = L->gro_next[h]; m >= 0; m = L->gro_next[m]) /* GRO keeps the last PSH */
        th[TCP_FLAGS_OFF] |= L->b.buf[(size_t)m * L->b.stride + L->b.off[m] + IPV4_HEADER + TCP_FLAGS_OFF] & 0x08;
    ip[2] = (uint8_t)(total >> 8);
    ip[3] = (uint8_t)total;
    uint16_t c = pl_csum_ipv4_header(ip, IPV4_HEADER);
    ip[10] = (uint8_t)(c >> 8);
    ip[11] = (uint8_t)c;
    uint16_t sum = pl_csum_pseudo(ip, total - IPV4_HEADER); /* what CHECKSUM_PARTIAL expects */
    th[TCP_CSUM_OFF] = (uint8_t)(sum >> 8);
    th[TCP_CSUM_OFF + 1] = (uint8_t)sum;
    struct vnet_hdr v = {.flags = VNET_F_NEEDS_CSUM, .gso_type = VNET_GSO_TCPV4,
                         .hdr_len = (uint16_t)(ETH_HLEN_ + IPV4_HEADER + thl), .gso_size = (uint16_t)own,
                         .csum_start = ETH_HLEN_ + IPV4_HEADER, .csum_offset = TCP_CSUM_OFF};
    struct iovec *iov = &L->giov[*iov_used];
    size_t cnt = 0;
    iov[cnt].iov_base = frame_head(ip, nh, &v);
    iov[cnt++].iov_len = VNET_HLEN + ETH_HLEN_ + IPV4_HEADER + thl + own;
    for (int32_t m = L->gro_next[h]; m >= 0; m = L->gro_next[m]) {
        uint8_t *mip = L->b.buf + (size_t)m * L->b.stride + L->b.off[m];
        uint32_t mlen = (uint32_t)(mip[2] << 8 | mip[3]) - IPV4_HEADER - thl;
        iov[cnt].iov_base = mip + IPV4_HEADER + thl;
        iov[cnt++].iov_len = mlen;
    }
    *iov_used += cnt;
    queue_msg(L, k, nh, iov, cnt, (uint16_t)cnt);
    L->st.gro_frames++;
    L->st.gro_merged += cnt - 1;
    return 0;
}

/* AF_XDP: which frames travel together (gro.h); gro_next links each frame's members. */
static void plan_gro(struct pl_loop *L, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct pl_neigh *nh = &L->hops[i];
        L->gro_want[i] = L->how[i] == OUT_FRAME && L->b.verdict[i] != PL_V_TUNNEL; /* no GSO type for IPIP */
        uint64_t mac = 0;
        for (int j = 0; j < 6; j++)
            mac = mac << 8 | nh->dst[j];
        L->gro_key[i] = mac << 16 ^ (uint64_t)(uint32_t)nh->ifindex;
        L->gro_mtu[i] = nh->mtu;
        L->gro_next[i] = L->gro_last[i] = -1;
    }
    pl_gro_plan(L->b.buf, L->b.stride, L->b.off, L->b.lens, L->gro_want, L->gro_key, L->gro_mtu, n, L->gro_group,
                L->gro_total);
    for (size_t i = 0; i < n; i++) {
        int32_t h = L->gro_group[i];
        if (h == (int32_t)i)
            continue;
        int32_t last = L->gro_last[h] >= 0 ? L->gro_last[h] : h;
        L->gro_next[last] = (int32_t)i;
        L->gro_last[h] = (int32_t)i;
    }
}

/* After the gate: the frames (one sendmmsg for the batch) and what goes through the
 * kernel's routing. */
static void send_all(struct pl_loop *L, size_t n)
{
    size_t k = 0, iov_used = 0;
    if (L->xs) {
        for (size_t i = 0; i < n; i++)
            if (L->info[i] && L->how[i] != OUT_NONE && forward_ttl(L, i) < 0)
                L->how[i] = OUT_NONE;
        plan_gro(L, n);
    }
    for (size_t i = 0; i < n; i++) {
        if (L->how[i] == OUT_FRAME) {
            if (L->xs && L->gro_group[i] != (int32_t)i)
                continue; /* it leaves inside the frame of an earlier row */
            if (L->pk && L->b.verdict[i] == PL_V_TUNNEL && L->b.lens[i] > L->hops[i].mtu) {
                if (k) /* what is queued goes first: a flow's packets keep their order */
                    flush_frames(L, k);
                k = 0;
                if (tunnel_tso(L, i) == 0)
                    continue;
            } else if (L->pk) {
                pkt_finish(L, i);
            }
            int rc = L->xs && L->gro_next[i] >= 0 ? frame_gro(L, i, k, &iov_used) : frame_out(L, i, k);
            if (rc == 0)
                k++;
        } else if (L->how[i] == OUT_ROUTE) {
            send_routed(L, i);
        } else if (L->how[i] == OUT_REPLY) {
            send_reply(L, i);
        }
    }
    if (k)
        flush_frames(L, k);
}

/* The classify pass: ours -> NF_REPEAT with the owned bit; else NF_ACCEPT. */
static void act_classify(struct pl_loop *L, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        L->how[i] = OUT_NONE;
        if (L->b.verdict[i] == PL_V_NAT) {
            L->b.marks[i] |= PL_OWNED_MARK;
            L->acts[i] = PL_NFQ_REPEAT_MARK;
            L->st.owned++;
        } else {
            L->acts[i] = PL_NFQ_ACCEPT;
            L->st.accepted++;
        }
    }
}

static long receive(struct pl_loop *L, int poll_ms)
{
    if (L->q)
        return pl_nfq_recv(L->q, L->b.buf, L->b.rows, L->b.stride, L->b.off, L->b.lens, L->b.marks, L->ids,
                           L->info, poll_ms);
    if (L->pk)
        return pl_pkt_recv(L->pk, L->b.buf, L->b.rows, L->b.stride, PL_HEADROOM, L->b.off, L->b.lens, L->b.marks,
                           L->fr, poll_ms, &L->pst);
    return pl_xsk_recv(L->xs, L->n_xs, L->b.buf, L->b.rows, L->b.stride, L->b.off, L->b.lens, L->b.marks,
                       L->meta, poll_ms, L->spin_us, &L->xst);
}

/* Nothing published yet: every packet gets the fail-open/closed verdict (AF_XDP: the
 * program is attached only after the first tables, so this is NFQUEUE's case). */
static void unpublished(struct pl_loop *L, size_t n)
{
    /* the classify pass never drops: with no tables nothing is ours */
    int open = (L->flags & (PL_LOOP_F_FAIL_OPEN | PL_LOOP_F_CLASSIFY)) != 0;
    memset(L->acts, open ? PL_NFQ_ACCEPT : PL_NFQ_DROP, n);
    memset(L->how, OUT_NONE, n);
    L->st.unpublished += (uint64_t)n;
    if (open && L->q)
        L->st.accepted += (uint64_t)n;
    else
        L->st.dropped += (uint64_t)n;
}

int pl_loop_run(struct pl_loop *L, int max_ms, int poll_ms)
{
    uint64_t until = now_ns() + (uint64_t)(max_ms > 0 ? max_ms : 0) * 1000000u;
    while (!atomic_load(&L->stop)) {
        long n = receive(L, poll_ms);
        if (n < 0)
            return (int)n;
        if (n > 0) {
            uint64_t t0 = now_ns();
            pl_gate_batch_enter(L->g);
            uint64_t t1 = now_ns();
            const struct pl_fwd *f = L->f;
            if ((L->flags & PL_LOOP_F_CLASSIFY) && f->classify && f->state) {
                f->classify(f->state, L->b.desc, n, pl_monotonic(), 0, 0, 0, 0);
                act_classify(L, (size_t)n);
            } else if (!(L->flags & PL_LOOP_F_CLASSIFY) && f->engine && f->state) {
                pl_engine_batch(f, &L->b, (size_t)n, pl_monotonic());
                if (L->q)
                    act_nfq(L, (size_t)n);
                else if (L->pk)
                    act_pkt(L, (size_t)n);
                else
                    act_xsk(L, (size_t)n);
            } else {
                unpublished(L, (size_t)n);
            }
            L->st.packets += (uint64_t)n;
            L->st.batches++;
            pl_gate_batch_leave(L->g);
            uint64_t t2 = now_ns();
            L->st.gate_wait_ns += t1 - t0;
            L->st.engine_ns += t2 - t1;
            send_all(L, (size_t)n);
            if (L->q) {
                int rc = pl_nfq_verdict(L->q, (size_t)n, L->ids, L->acts, L->b.buf, L->b.stride, L->b.off,
                                        L->b.lens, L->b.marks);
                if (rc < 0)
                    return rc;
            }
        }
        if (max_ms > 0 && now_ns() >= until)
            break;
    }
    return 0;
}
