/* Batched NFQUEUE I/O (see nfq.h).  Follows the lab's nfq_fwd.c: libmnl for
 * the socket, libnetfilter_queue's nlmsg helpers for the config and verdict
 * headers; receive with recvmmsg straight into the batch rows, send every
 * verdict of a batch in one sendmsg whose iovec points at the rewritten
 * packets in place. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <arpa/inet.h>

#include <libmnl/libmnl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/types.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#include "checksum.h"
#include "nfq.h"
#include "rewrite.h"

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

#define ACK_TIMEOUT_MS 2000     /* the kernel answers the config message at once */
#define ACK_BUF 8192            /* an ACK or error message (quotes the request) */
#define CFG_BUF 512             /* the config message: four small attributes */
#define SNDBUF (2 * PL_NFQ_SEND_CHUNK)
#define IOV_MAX_PER_SEND 1020   /* UIO_MAXIOV is 1024 */
#define IOV_PER_VERDICT 3       /* header, packet bytes, attribute padding */
#define VERDICT_HDR 64          /* nlmsghdr + nfgenmsg + verdict attr + mark attr or payload attr header (<= 44) */
#define DRAIN_ROUNDS 8          /* recvmmsg calls per pl_nfq_recv, at most */
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define TCP_CSUM_OFF 16         /* RFC 793 */
#define UDP_CSUM_OFF 6          /* RFC 768 */

struct pl_nfq {
    struct mnl_socket *nl;
    int fd;
    uint16_t queue_num;
    size_t max_rows;
    struct mmsghdr *msgs;       /* max_rows */
    struct iovec *riov;         /* max_rows */
    uint32_t *pending;          /* ids of oversize packets to accept unchanged */
    size_t n_pending;
    uint8_t *hdrs;              /* max_rows * VERDICT_HDR */
    struct iovec *siov;         /* IOV_MAX_PER_SEND */
    struct pl_nfq_stats st;
};

/* ---- socket ------------------------------------------------------------------------- */

static int send_all(struct pl_nfq *q, struct iovec *iov, size_t iovcnt)
{
    /* no address: an unbound-peer netlink socket sends to the kernel (portid 0) */
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = iovcnt};
    for (;;) {
        ssize_t r = sendmsg(q->fd, &mh, 0);
        if (r >= 0) {
            q->st.sendmsgs++;
            return 0;
        }
        if (errno == EINTR)
            continue;
        q->st.send_errors++;
        return -errno;
    }
}

/* Wait for the ACK (or error) of the config message; packets cannot arrive yet. */
static int wait_ack(struct pl_nfq *q, uint32_t seq)
{
    char buf[ACK_BUF];
    struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
    for (;;) {
        int pr = poll(&pfd, 1, ACK_TIMEOUT_MS);
        if (pr == 0)
            return -ETIMEDOUT;
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        ssize_t r = recv(q->fd, buf, sizeof(buf), 0);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -errno;
        }
        int rc = mnl_cb_run(buf, (size_t)r, seq, mnl_socket_get_portid(q->nl), NULL, NULL);
        if (rc == MNL_CB_ERROR)
            return errno ? -errno : -EPROTO;
        if (rc == MNL_CB_STOP)
            return 0;
        /* MNL_CB_OK: the ACK of an NLM_F_ACK request ends as MNL_CB_STOP */
    }
}

static struct pl_nfq *alloc_q(uint16_t queue_num, size_t max_rows, int *e)
{
    struct pl_nfq *q = calloc(1, sizeof(*q));
    if (!q || max_rows == 0) {
        *e = q ? EINVAL : ENOMEM;
        free(q);
        return NULL;
    }
    q->fd = -1;
    q->queue_num = queue_num;
    q->max_rows = max_rows;
    q->msgs = calloc(max_rows, sizeof(*q->msgs));
    q->riov = calloc(max_rows, sizeof(*q->riov));
    q->pending = calloc(max_rows * DRAIN_ROUNDS, sizeof(*q->pending));
    q->hdrs = calloc(max_rows, VERDICT_HDR);
    q->siov = calloc(IOV_MAX_PER_SEND, sizeof(*q->siov));
    if (!q->msgs || !q->riov || !q->pending || !q->hdrs || !q->siov) {
        *e = ENOMEM;
        pl_nfq_close(q);
        return NULL;
    }
    return q;
}

struct pl_nfq *pl_nfq_wrap_fd(int fd, uint16_t queue_num, size_t max_rows, int *err)
{
    int e = 0;
    struct pl_nfq *q = alloc_q(queue_num, max_rows, &e);
    if (!q) {
        if (err)
            *err = e;
        return NULL;
    }
    q->fd = fd;
    return q;
}

struct pl_nfq *pl_nfq_open(uint16_t queue_num, uint32_t flags, uint32_t maxlen, int rcvbuf,
                           size_t max_rows, int *err)
{
    int e = 0;
    struct pl_nfq *q = alloc_q(queue_num, max_rows, &e);
    if (!q)
        goto fail;
    q->nl = mnl_socket_open(NETLINK_NETFILTER);
    if (!q->nl || mnl_socket_bind(q->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        e = errno ? errno : EIO;
        goto fail;
    }
    q->fd = mnl_socket_get_fd(q->nl);
    int sndbuf = SNDBUF;
    if (rcvbuf > 0 && setsockopt(q->fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) < 0) {
        e = errno;
        goto fail;
    }
    if (setsockopt(q->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0) {
        e = errno;
        goto fail;
    }

    /* one config message: bind + copy mode + queue length + flags, acknowledged */
    char b[CFG_BUF];
    struct nlmsghdr *nlh = nfq_nlmsg_put(b, NFQNL_MSG_CONFIG, queue_num);
    nfq_nlmsg_cfg_put_cmd(nlh, AF_INET, NFQNL_CFG_CMD_BIND);
    nfq_nlmsg_cfg_put_params(nlh, NFQNL_COPY_PACKET, PL_NFQ_COPY_RANGE);
    nfq_nlmsg_cfg_put_qmaxlen(nlh, maxlen);
    uint32_t f = 0;
    if (flags & PL_NFQ_F_FAIL_OPEN)
        f |= NFQA_CFG_F_FAIL_OPEN;
    if (flags & PL_NFQ_F_GSO)
        f |= NFQA_CFG_F_GSO;
    mnl_attr_put_u32(nlh, NFQA_CFG_FLAGS, htonl(f));
    mnl_attr_put_u32(nlh, NFQA_CFG_MASK, htonl(NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO));
    nlh->nlmsg_flags |= NLM_F_ACK;
    nlh->nlmsg_seq = 1;
    if (mnl_socket_sendto(q->nl, nlh, nlh->nlmsg_len) < 0) {
        e = errno;
        goto fail;
    }
    int rc = wait_ack(q, 1);
    if (rc < 0) {
        e = -rc;
        goto fail;
    }
    return q;
fail:
    if (err)
        *err = e ? e : EIO;
    pl_nfq_close(q);
    return NULL;
}

int pl_nfq_fd(const struct pl_nfq *q)
{
    return q->fd;
}

void pl_nfq_get_stats(const struct pl_nfq *q, struct pl_nfq_stats *out)
{
    *out = q->st;
}

void pl_nfq_close(struct pl_nfq *q)
{
    if (!q)
        return;
    if (q->nl)
        mnl_socket_close(q->nl); /* the kernel unbinds the queue (NETLINK_URELEASE) */
    /* a pl_nfq_wrap_fd descriptor stays the caller's */
    free(q->msgs);
    free(q->riov);
    free(q->pending);
    free(q->hdrs);
    free(q->siov);
    free(q);
}

/* ---- verdicts ------------------------------------------------------------------------ */

/* Build one verdict message header in `h`; returns its iovec count (1..3). */
static size_t put_verdict(struct pl_nfq *q, uint8_t *h, uint32_t id, int verdict, const uint32_t *mark,
                          const uint8_t *pkt, uint32_t plen, struct iovec *iov)
{
    static const uint8_t zeros[NLA_ALIGNTO];
    struct nlmsghdr *nlh = nfq_nlmsg_put((char *)h, NFQNL_MSG_VERDICT, q->queue_num);
    nfq_nlmsg_verdict_put(nlh, (int)id, verdict);
    if (mark)
        nfq_nlmsg_verdict_put_mark(nlh, *mark);
    size_t k = 1;
    if (pkt) {
        struct nlattr *a = (struct nlattr *)((uint8_t *)nlh + NLMSG_ALIGN(nlh->nlmsg_len));
        a->nla_type = NFQA_PAYLOAD;
        a->nla_len = (uint16_t)(NLA_HDRLEN + plen);
        nlh->nlmsg_len = NLMSG_ALIGN(nlh->nlmsg_len) + NLA_HDRLEN;
        iov[1].iov_base = (void *)pkt;
        iov[1].iov_len = plen;
        size_t pad = NLA_ALIGN(plen) - plen;
        if (pad) {
            iov[2].iov_base = (void *)zeros;
            iov[2].iov_len = pad;
            k = 3;
        } else {
            k = 2;
        }
        iov[0].iov_base = nlh;
        iov[0].iov_len = nlh->nlmsg_len;
        nlh->nlmsg_len += (uint32_t)NLA_ALIGN(plen);
    } else {
        iov[0].iov_base = nlh;
        iov[0].iov_len = nlh->nlmsg_len;
    }
    q->st.verdict_msgs++;
    return k;
}

static int flush(struct pl_nfq *q, size_t *iovcnt, size_t *bytes)
{
    int rc = 0;
    if (*iovcnt)
        rc = send_all(q, q->siov, *iovcnt);
    *iovcnt = 0;
    *bytes = 0;
    return rc;
}

int pl_nfq_verdict(struct pl_nfq *q, size_t n, const uint32_t *ids, const uint8_t *actions,
                   const uint8_t *buf, size_t stride, const uint32_t *off, const uint32_t *lens,
                   const uint32_t *marks)
{
    size_t iovcnt = 0, bytes = 0;
    int rc = 0, r;
    if (n > q->max_rows)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *pkt = NULL;
        uint32_t plen = 0;
        const uint32_t *mark = NULL;
        int verdict = NF_ACCEPT;
        if (actions[i] == PL_NFQ_REPEAT_MARK && marks) {
            verdict = NF_REPEAT;
            mark = &marks[i];
        } else if (actions[i] == PL_NFQ_DROP) {
            verdict = NF_DROP;
        } else if (actions[i] == PL_NFQ_ACCEPT_PAYLOAD) {
            /* never read outside row i, whatever off/lens say */
            if ((size_t)off[i] + lens[i] <= stride && lens[i] <= PL_NFQ_MAX_PAYLOAD) {
                pkt = buf + i * stride + off[i];
                plen = lens[i];
            } else {
                q->st.payload_errors++; /* the rewritten packet cannot be sent: never the old one */
                verdict = NF_DROP;
            }
        }
        size_t need = plen + VERDICT_HDR;
        if (iovcnt + IOV_PER_VERDICT > IOV_MAX_PER_SEND || (bytes && bytes + need > PL_NFQ_SEND_CHUNK))
            if ((r = flush(q, &iovcnt, &bytes)) < 0 && !rc)
                rc = r;
        iovcnt += put_verdict(q, q->hdrs + i * VERDICT_HDR, ids[i], verdict, mark, pkt, plen, q->siov + iovcnt);
        bytes += need;
    }
    if ((r = flush(q, &iovcnt, &bytes)) < 0 && !rc)
        rc = r;
    return rc;
}

static void accept_pending(struct pl_nfq *q)
{
    size_t iovcnt = 0, bytes = 0;
    uint8_t h[VERDICT_HDR];
    for (size_t i = 0; i < q->n_pending; i++) {
        /* plain verdicts: one header buffer per message is needed only until the
         * send, so send each on its own (oversize packets are rare) */
        iovcnt = put_verdict(q, h, q->pending[i], NF_ACCEPT, NULL, NULL, 0, q->siov);
        flush(q, &iovcnt, &bytes);
    }
    q->n_pending = 0;
}

/* ---- receive ------------------------------------------------------------------------- */

struct pkt_meta {
    uint32_t id, mark, skbinfo, cap_len;
    const uint8_t *payload;
    uint32_t plen;
    int have_hdr, payload_cut;
};

/* Walk the attributes of an NFQNL_MSG_PACKET that may have been cut short (a
 * truncated datagram): everything before the cut is still good. */
static void parse_packet(const struct nlmsghdr *nlh, size_t avail, struct pkt_meta *m)
{
    const uint8_t *base = (const uint8_t *)nlh;
    const uint8_t *end = base + (avail < nlh->nlmsg_len ? avail : nlh->nlmsg_len);
    const uint8_t *p = base + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
    memset(m, 0, sizeof(*m));
    while (p + NLA_HDRLEN <= end) {
        const struct nlattr *a = (const struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN)
            break;
        const uint8_t *data = p + NLA_HDRLEN;
        uint32_t dlen = a->nla_len - NLA_HDRLEN;
        int whole = data + dlen <= end;
        switch (a->nla_type & NLA_TYPE_MASK) {
        case NFQA_PACKET_HDR:
            if (whole && dlen >= sizeof(struct nfqnl_msg_packet_hdr)) {
                struct nfqnl_msg_packet_hdr ph;
                memcpy(&ph, data, sizeof(ph));
                m->id = ntohl(ph.packet_id);
                m->have_hdr = 1;
            }
            break;
        case NFQA_MARK:
            if (whole && dlen >= 4) {
                memcpy(&m->mark, data, 4);
                m->mark = ntohl(m->mark);
            }
            break;
        case NFQA_SKB_INFO:
            if (whole && dlen >= 4) {
                memcpy(&m->skbinfo, data, 4);
                m->skbinfo = ntohl(m->skbinfo);
            }
            break;
        case NFQA_CAP_LEN:
            if (whole && dlen >= 4) {
                memcpy(&m->cap_len, data, 4);
                m->cap_len = ntohl(m->cap_len);
            }
            break;
        case NFQA_PAYLOAD:
            m->payload = data;
            m->plen = dlen;
            m->payload_cut = !whole;
            break;
        default:
            break;
        }
        p += NLA_ALIGN(a->nla_len);
    }
}

/* Handle the datagram received into row r (len bytes, truncated if `cut`):
 * place its packet in row w.  Returns 1 if row w now holds a packet. */
static int take(struct pl_nfq *q, uint8_t *buf, size_t stride, size_t r, size_t w, size_t len,
                int cut, uint32_t *off, uint32_t *lens, uint32_t *marks, uint32_t *ids,
                uint8_t *info)
{
    const struct nlmsghdr *nlh = (const struct nlmsghdr *)(buf + r * stride);
    int placed = 0, n_msgs = 0;
    size_t left = len;
    while (left >= NLMSG_HDRLEN && nlh->nlmsg_len >= NLMSG_HDRLEN) {
        size_t avail = left;
        n_msgs++;
        if (nlh->nlmsg_len > left && !cut) {
            q->st.malformed++; /* claims more bytes than the datagram holds */
            break;
        }
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            if (nlh->nlmsg_len >= NLMSG_HDRLEN + sizeof(struct nlmsgerr)) {
                const struct nlmsgerr *e = (const struct nlmsgerr *)((const uint8_t *)nlh + NLMSG_HDRLEN);
                if (e->error)
                    q->st.nl_errors++;
            } else {
                q->st.malformed++;
            }
        } else if (NFNL_SUBSYS_ID(nlh->nlmsg_type) == NFNL_SUBSYS_QUEUE &&
                   NFNL_MSG_TYPE(nlh->nlmsg_type) == NFQNL_MSG_PACKET) {
            struct pkt_meta m;
            parse_packet(nlh, avail, &m);
            if (!m.have_hdr) {
                q->st.malformed++; /* no id: nothing we can give a verdict for */
            } else if (placed || !m.payload) {
                /* a second packet in one datagram, or no payload: accept unchanged */
                q->st.malformed++;
                if (q->n_pending < q->max_rows * DRAIN_ROUNDS)
                    q->pending[q->n_pending++] = m.id;
            } else if (m.payload_cut || (m.cap_len && m.cap_len > m.plen) ||
                       (size_t)PL_HEADROOM + m.plen > stride) {
                q->st.oversize++;
                if (q->n_pending < q->max_rows * DRAIN_ROUNDS)
                    q->pending[q->n_pending++] = m.id;
            } else {
                uint8_t *dst = buf + w * stride + PL_HEADROOM;
                memmove(dst, m.payload, m.plen); /* rows w <= r: never ahead of unread data */
                uint8_t fl = 0;
                if (m.skbinfo & NFQA_SKB_GSO) {
                    fl |= PL_NFQ_PKT_GSO;
                    q->st.gso_packets++;
                }
                if ((m.skbinfo & NFQA_SKB_CSUMNOTREADY) && pl_csum_l4_complete(dst, m.plen)) {
                    fl |= PL_NFQ_PKT_CSUM_FIXED;
                    q->st.csum_fixed++;
                }
                off[w] = PL_HEADROOM;
                lens[w] = m.plen;
                marks[w] = m.mark;
                ids[w] = m.id;
                info[w] = fl;
                placed = 1;
            }
        } else {
            q->st.malformed++;
        }
        if (cut)
            break; /* nothing after a cut message */
        size_t step = NLMSG_ALIGN(nlh->nlmsg_len);
        if (step >= left)
            break;
        left -= step;
        nlh = (const struct nlmsghdr *)((const uint8_t *)nlh + step);
        if (placed)
            break; /* the row now holds the packet at PL_HEADROOM: stop reading it */
    }
    if (n_msgs == 0)
        q->st.malformed++; /* not even one netlink header */
    return placed;
}

long pl_nfq_recv(struct pl_nfq *q, uint8_t *buf, size_t rows, size_t stride, uint32_t *off,
                 uint32_t *lens, uint32_t *marks, uint32_t *ids, uint8_t *info, int timeout_ms)
{
    if (rows > q->max_rows || stride < PL_HEADROOM + 20)
        return -EINVAL;
    struct pollfd pfd = {.fd = q->fd, .events = POLLIN};
    int pr = poll(&pfd, 1, timeout_ms);
    if (pr <= 0)
        return (pr < 0 && errno != EINTR) ? -errno : 0;

    size_t n = 0;
    int fatal = 0;
    for (int round = 0; round < DRAIN_ROUNDS && n < rows; round++) {
        size_t want = rows - n;
        for (size_t j = 0; j < want; j++) {
            q->riov[j].iov_base = buf + (n + j) * stride;
            q->riov[j].iov_len = stride;
            memset(&q->msgs[j], 0, sizeof(q->msgs[j]));
            q->msgs[j].msg_hdr.msg_iov = &q->riov[j];
            q->msgs[j].msg_hdr.msg_iovlen = 1;
        }
        int k = recvmmsg(q->fd, q->msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        q->st.recv_calls++;
        if (k < 0) {
            if (errno == ENOBUFS) {
                q->st.enobufs++;
                continue; /* the error is reported once; more may be queued */
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            q->st.recv_errors++;
            fatal = -errno;
            break;
        }
        size_t w = n;
        for (int j = 0; j < k; j++) {
            int cut = (q->msgs[j].msg_hdr.msg_flags & MSG_TRUNC) != 0;
            if (take(q, buf, stride, n + (size_t)j, w, q->msgs[j].msg_len, cut, off, lens, marks, ids, info))
                w++;
        }
        n = w;
        if ((size_t)k < want)
            break; /* drained */
    }
    if (q->n_pending)
        accept_pending(q);
    if (n) {
        q->st.packets += n;
        q->st.batches++;
        return (long)n;
    }
    return fatal;
}
