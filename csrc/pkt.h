/* AF_PACKET receive for the C loop (--io afpacket): frames from a packet socket straight
 * into the batch rows, many per system call (recvmmsg), no Python per frame.
 *
 * The socket is opened by pylvs.dataplane.io.afpacket.open_tap: an ETH_P_ALL tap on the
 * VIPs' device (it sees a frame before the netdev ingress rule that drops the kernel's
 * copy of service traffic), PACKET_VNET_HDR on, usually with a classic BPF filter that
 * lets through only IPv4 frames to this host for a VIP.
 *
 * pl_pkt_new    wrap the socket `fd` (not owned: the caller closes it) for batches of up
 *               to `rows` rows.  NULL and *err = errno on failure.
 * pl_pkt_free   free it (the socket stays open).
 * pl_pkt_recv   fill up to `rows` rows: wait at most poll_ms for the first frame (poll),
 *               then take what is queued without blocking.  Row i gets the IP packet at
 *               buf[i*stride + ip_at] (off[i], lens[i]; marks 0: frames are taken before
 *               netfilter), the frame's virtio-net header, MACs and device in fr[i].  Frames that are not
 *               IPv4 for this host (the filter-less case: our own transmissions, other
 *               hosts', ARP) are skipped, counted.  A TCP/UDP checksum the sender left
 *               partial (VIRTIO_NET_HDR_F_NEEDS_CSUM) is completed here, except in a GSO
 *               super-packet: that one keeps the pseudo-header sum, and whoever sends
 *               it on finishes it (a virtio-net header of its own, or a cut in C).
 *               Returns the rows filled, or -errno when poll fails.
 */
#ifndef PYLVS_PKT_H
#define PYLVS_PKT_H
#include <stddef.h>
#include <stdint.h>

enum {
    PL_VNET_F_NEEDS_CSUM = 1,   /* struct virtio_net_hdr (linux/virtio_net.h) */
    PL_VNET_GSO_NONE = 0,
    PL_VNET_GSO_TCPV4 = 1,
    PL_VNET_GSO_ECN = 0x80,
    PL_VNET_HLEN = 10
};

struct pl_vnet_hdr {            /* struct virtio_net_hdr, host byte order on a packet socket */
    uint8_t flags, gso_type;
    uint16_t hdr_len, gso_size, csum_start, csum_offset;
};

struct pl_pkt_frame {           /* what a row's frame said besides its IP packet */
    struct pl_vnet_hdr vnet;
    uint8_t dst[6], src[6];     /* its Ethernet addresses */
    int32_t ifindex;            /* the device it came in by */
};

struct pl_pkt_stats {
    uint64_t frames;            /* frames read from the socket */
    uint64_t polls;
    uint64_t not_for_us;        /* another host's frame, or our own transmission */
    uint64_t not_ipv4;
    uint64_t truncated;         /* longer than a row, or shorter than the headers */
    uint64_t csum_completed;    /* partial checksums finished here */
    uint64_t gso_frames;        /* GSO super-packets taken whole */
    uint64_t recv_errors;       /* recvmmsg errors other than "nothing queued" (a link flap) */
};

struct pl_pkt;
struct pl_pkt *pl_pkt_new(int fd, size_t rows, int *err);
void pl_pkt_free(struct pl_pkt *p);
long pl_pkt_recv(struct pl_pkt *p, uint8_t *buf, size_t rows, size_t stride, uint32_t ip_at, uint32_t *off,
                 uint32_t *lens, uint32_t *marks, struct pl_pkt_frame *fr, int poll_ms, struct pl_pkt_stats *st);

#endif
