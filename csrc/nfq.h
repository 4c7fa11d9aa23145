/* Batched NFQUEUE I/O over libmnl + libnetfilter_queue (its nlmsg helpers),
 * for pylvs.dataplane.io.nfq_native.  The approach is the lab's nfq_fwd.c
 * (../shared/lab/src): one netlink socket per queue, a large receive buffer,
 * every verdict of a batch in one sendmsg.
 *
 * pl_nfq_open      binds queue `queue_num` (copy mode packet, 0xffff bytes),
 *                  sets the kernel queue length, NFQA_CFG_F_FAIL_OPEN and/or
 *                  NFQA_CFG_F_GSO (PL_NFQ_F_*), SO_RCVBUFFORCE `rcvbuf`, and
 *                  waits for the kernel's ACK.  NULL on failure, *err = errno.
 * pl_nfq_recv      fills up to `rows` rows of a batch: waits at most
 *                  `timeout_ms` for the first packet (poll), then drains what
 *                  is queued without blocking (recvmmsg straight into the
 *                  rows, one netlink message per row).  Packet i is moved to
 *                  buf[i*stride + PL_HEADROOM]: off[i], lens[i], marks[i]
 *                  (NFQA_MARK, 0 if none), ids[i] (the packet id for the
 *                  verdict) and info[i] (PL_NFQ_PKT_*) are set.
 *                  Returns the number of packets (0 on timeout), or -errno on
 *                  a receive error other than ENOBUFS/EAGAIN/EINTR when no
 *                  packet was received.
 *   - ENOBUFS (the socket buffer overflowed: the kernel lost messages for
 *     us) is counted in `enobufs`, never fatal.
 *   - a netlink message that is not a well-formed packet is counted in
 *     `malformed` and skipped (an NLMSG_ERROR with an error, e.g. a verdict
 *     the kernel refused, is counted in `nl_errors`).
 *   - a packet bigger than its row (the datagram was truncated, or the kernel
 *     cut it at the copy range: NFQA_CAP_LEN) is accepted unchanged at once
 *     and counted in `oversize`; it does not take a row.
 *   - NFQA_SKB_CSUMNOTREADY (GSO queues: the TCP/UDP checksum is partial, the
 *     pseudo-header sum only): the checksum is computed in full here, before
 *     the engine updates it incrementally; counted in `csum_fixed`.  GSO
 *     super-packets (NFQA_SKB_GSO) are counted in `gso_packets`.
 * pl_nfq_verdict   one verdict per packet, all in one sendmsg (split only past
 *                  PL_NFQ_SEND_CHUNK bytes or the iovec limit): PL_NFQ_ACCEPT,
 *                  PL_NFQ_DROP, or PL_NFQ_ACCEPT_PAYLOAD with the packet
 *                  buf[i*stride + off[i] .. + lens[i]] attached (read in place
 *                  through the iovec, not copied), or PL_NFQ_REPEAT_MARK: NF_REPEAT
 *                  with NFQA_MARK = marks[i] (marks may be NULL when no verdict is
 *                  of that kind; then the packet is accepted).  A payload outside
 *                  its row or longer than PL_NFQ_MAX_PAYLOAD is dropped instead
 *                  (`payload_errors`).  0 or -errno.
 * pl_nfq_wrap_fd   a pl_nfq over an open datagram socket, nothing bound or
 *                  configured, the descriptor left open by pl_nfq_close: lets
 *                  unprivileged tests feed crafted netlink messages through a
 *                  socketpair and read the verdicts back.
 */
#ifndef PYLVS_NFQ_H
#define PYLVS_NFQ_H
#include <stddef.h>
#include <stdint.h>

enum {
    PL_NFQ_F_FAIL_OPEN = 1,     /* NFQA_CFG_F_FAIL_OPEN */
    PL_NFQ_F_GSO = 4            /* NFQA_CFG_F_GSO */
};

enum {
    PL_NFQ_ACCEPT = 0,          /* NF_ACCEPT, packet unchanged */
    PL_NFQ_DROP = 1,            /* NF_DROP */
    PL_NFQ_ACCEPT_PAYLOAD = 2,  /* NF_ACCEPT with the row's bytes as the new packet */
    PL_NFQ_REPEAT_MARK = 3      /* NF_REPEAT with marks[i] as the packet's new mark: the
                                 * same hook runs again (the classify pass, loop.h) */
};

enum {
    PL_NFQ_PKT_GSO = 1,         /* NFQA_SKB_GSO: a GSO super-packet */
    PL_NFQ_PKT_CSUM_FIXED = 2   /* NFQA_SKB_CSUMNOTREADY: L4 checksum completed here */
};

enum {
    PL_NFQ_COPY_RANGE = 65535,  /* NFQNL_COPY_PACKET range: a whole IPv4 packet */
    PL_NFQ_META_MAX = 1024,     /* room for the netlink headers before the payload */
    PL_NFQ_SEND_CHUNK = 4194304, /* bytes per verdict sendmsg (SO_SNDBUFFORCE is 2x) */
    PL_NFQ_MAX_PAYLOAD = 65531  /* a netlink attribute holds 65535 bytes with its 4-byte header */
};

struct pl_nfq_stats {
    uint64_t packets;       /* packets placed in rows */
    uint64_t batches;       /* pl_nfq_recv calls that returned packets */
    uint64_t recv_calls;    /* recvmmsg system calls */
    uint64_t enobufs;       /* ENOBUFS from recvmmsg */
    uint64_t recv_errors;   /* other receive errors */
    uint64_t malformed;     /* netlink messages skipped */
    uint64_t nl_errors;     /* NLMSG_ERROR with an error code */
    uint64_t gso_packets;
    uint64_t csum_fixed;
    uint64_t oversize;      /* accepted unchanged, not placed */
    uint64_t verdict_msgs;  /* verdict messages sent */
    uint64_t sendmsgs;      /* verdict sendmsg calls */
    uint64_t send_errors;   /* failed sendmsg calls */
    uint64_t payload_errors; /* PL_NFQ_ACCEPT_PAYLOAD that could not be attached: dropped */
};

struct pl_nfq;

struct pl_nfq *pl_nfq_open(uint16_t queue_num, uint32_t flags, uint32_t maxlen, int rcvbuf,
                           size_t max_rows, int *err);
int pl_nfq_fd(const struct pl_nfq *q);
long pl_nfq_recv(struct pl_nfq *q, uint8_t *buf, size_t rows, size_t stride, uint32_t *off,
                 uint32_t *lens, uint32_t *marks, uint32_t *ids, uint8_t *info, int timeout_ms);
int pl_nfq_verdict(struct pl_nfq *q, size_t n, const uint32_t *ids, const uint8_t *actions,
                   const uint8_t *buf, size_t stride, const uint32_t *off, const uint32_t *lens,
                   const uint32_t *marks);
void pl_nfq_get_stats(const struct pl_nfq *q, struct pl_nfq_stats *out);
void pl_nfq_close(struct pl_nfq *q);
struct pl_nfq *pl_nfq_wrap_fd(int fd, uint16_t queue_num, size_t max_rows, int *err);

#endif
