/* AF_PACKET receive for the C loop (see pkt.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <sys/socket.h>

#include "pkt.h"
#include "checksum.h"

#define ETH_HLEN_ 14
#define ETH_TYPE_OFF 12
#define IPV4_MIN 20
#define LINK_HLEN (PL_VNET_HLEN + ETH_HLEN_)   /* what precedes the IP packet in a frame read */
#define RECV_ROUNDS 4                          /* recvmmsg calls per batch at most */

_Static_assert(sizeof(struct pl_vnet_hdr) == PL_VNET_HLEN, "struct virtio_net_hdr is 10 bytes");

struct pl_pkt {
    int fd;
    size_t rows;
    struct mmsghdr *mmsg;
    struct iovec *iov;
    struct sockaddr_ll *sll;
};

struct pl_pkt *pl_pkt_new(int fd, size_t rows, int *err)
{
    struct pl_pkt *p = calloc(1, sizeof(*p));
    if (p) {
        p->fd = fd;
        p->rows = rows;
        p->mmsg = calloc(rows, sizeof(*p->mmsg));
        p->iov = calloc(rows, sizeof(*p->iov));
        p->sll = calloc(rows, sizeof(*p->sll));
    }
    if (!p || !p->mmsg || !p->iov || !p->sll || rows == 0) {
        if (err)
            *err = rows == 0 ? EINVAL : ENOMEM;
        pl_pkt_free(p);
        return NULL;
    }
    return p;
}

void pl_pkt_free(struct pl_pkt *p)
{
    if (!p)
        return;
    free(p->mmsg);
    free(p->iov);
    free(p->sll);
    free(p);
}

/* Is frame j (read into its row) one to forward?  Counts it when not. */
static int wanted(const struct pl_pkt *p, size_t j, const uint8_t *frame, size_t room, struct pl_pkt_stats *st)
{
    const struct mmsghdr *m = &p->mmsg[j];
    size_t len = m->msg_len;
    if (p->sll[j].sll_pkttype != PACKET_HOST) { /* ours going out, or another host's */
        st->not_for_us++;
        return 0;
    }
    if ((m->msg_hdr.msg_flags & MSG_TRUNC) || len > room || len < LINK_HLEN + IPV4_MIN) {
        st->truncated++;
        return 0;
    }
    if (frame[PL_VNET_HLEN + ETH_TYPE_OFF] != 0x08 || frame[PL_VNET_HLEN + ETH_TYPE_OFF + 1] != 0x00) {
        st->not_ipv4++;
        return 0;
    }
    return 1;
}

long pl_pkt_recv(struct pl_pkt *p, uint8_t *buf, size_t rows, size_t stride, uint32_t ip_at, uint32_t *off,
                 uint32_t *lens, uint32_t *marks, struct pl_pkt_frame *fr, int poll_ms, struct pl_pkt_stats *st)
{
    if (rows > p->rows)
        rows = p->rows;
    if (ip_at < LINK_HLEN || (size_t)ip_at + IPV4_MIN > stride)
        return -EINVAL;
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    st->polls++;
    int r = poll(&pfd, 1, poll_ms);
    if (r < 0)
        return errno == EINTR ? 0 : -errno;
    if (r == 0)
        return 0;
    size_t at = ip_at - LINK_HLEN, room = stride - at, n = 0;
    /* Rounds bound the call when frames not to forward keep coming (no filter): the loop
     * must come back to look at its stop flag. */
    for (int round = 0; round < RECV_ROUNDS && n < rows; round++) {
        for (size_t j = n; j < rows; j++) {
            p->iov[j].iov_base = buf + j * stride + at;
            p->iov[j].iov_len = room;
            memset(&p->mmsg[j], 0, sizeof(p->mmsg[j]));
            p->mmsg[j].msg_hdr.msg_iov = &p->iov[j];
            p->mmsg[j].msg_hdr.msg_iovlen = 1;
            p->mmsg[j].msg_hdr.msg_name = &p->sll[j];
            p->mmsg[j].msg_hdr.msg_namelen = sizeof(p->sll[j]);
        }
        int got = recvmmsg(p->fd, p->mmsg + n, (unsigned)(rows - n), MSG_DONTWAIT | MSG_TRUNC, NULL);
        if (got <= 0) {
            if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                st->recv_errors++; /* e.g. ENETDOWN while the link flaps */
            break;
        }
        size_t w = n;
        for (size_t j = n; j < n + (size_t)got; j++) {
            uint8_t *frame = buf + j * stride + at;
            st->frames++;
            if (!wanted(p, j, frame, room, st))
                continue;
            uint32_t iplen = p->mmsg[j].msg_len - LINK_HLEN;
            if (w != j) /* a skipped frame before it (no filter): close the gap */
                memmove(buf + w * stride + at, frame, LINK_HLEN + iplen);
            uint8_t *ip = buf + w * stride + ip_at;
            struct pl_pkt_frame *f = &fr[w];
            memcpy(&f->vnet, ip - LINK_HLEN, PL_VNET_HLEN);
            memcpy(f->dst, ip - ETH_HLEN_, 6);
            memcpy(f->src, ip - ETH_HLEN_ + 6, 6);
            f->ifindex = p->sll[j].sll_ifindex;
            if (f->vnet.gso_type != PL_VNET_GSO_NONE)
                st->gso_frames++;
            else if ((f->vnet.flags & PL_VNET_F_NEEDS_CSUM) && pl_csum_l4_complete(ip, iplen)) {
                st->csum_completed++;
                f->vnet.flags &= (uint8_t)~PL_VNET_F_NEEDS_CSUM;
            }
            off[w] = ip_at;
            lens[w] = iplen;
            marks[w] = 0;
            w++;
        }
        int drained = (size_t)got < rows - n;
        n = w;
        if (drained)
            break;
    }
    return (long)n;
}
