/* Receive offload for the frames a batch sends: consecutive TCP segments of one flow
 * leave as one super-packet (a virtio-net GSO header), which the kernel and the next
 * stacks handle as one, as the kernel's GRO would have merged them.  AF_XDP hands the
 * loop every MTU-sized segment (XDP runs before GRO, and a veth peer of an XDP device
 * stops offloading); without this, each segment costs the whole way down, once.
 *
 * pl_gro_plan  for rows 0..n-1 of a batch: want[i] says row i leaves as a frame, key[i]
 *              names its next hop (only equal keys merge), mtu[i] the hop's MTU.  Sets
 *              group[i] to the row whose frame carries row i (i itself for a frame of
 *              its own), and total[h] to the TCP payload bytes of the frame row h heads.
 *              Returns how many rows joined another's frame.
 *              A segment joins a frame when the kernel's tcp_gro_receive would merge it:
 *              IPv4 without options, not a fragment, ACK set and nothing but ACK and PSH,
 *              the same addresses, ports, TOS, TTL, DF, ACK number and TCP options as
 *              the frame's first segment, its sequence number right after the frame's
 *              last byte, a payload no larger than the first segment's, and a valid TCP
 *              checksum (a merged frame gets a fresh one, so a damaged segment must not
 *              join).  A smaller segment or one with PSH ends its frame; so does any other
 *              TCP packet of the flow (a FIN, a bare ACK) and the 64 KiB IPv4 limit.  The
 *              order of each flow's bytes is kept: a frame leaves where its first
 *              segment was.
 */
#ifndef PYLVS_GRO_H
#define PYLVS_GRO_H
#include <stddef.h>
#include <stdint.h>

enum {
    PL_GRO_MAX_SEGS = 44,       /* segments per frame: 64 KiB of 1448-byte segments */
    PL_GRO_OPEN = 16            /* flows with an open frame at once within a batch */
};

size_t pl_gro_plan(const uint8_t *buf, size_t stride, const uint32_t *off, const uint32_t *lens, const uint8_t *want,
                   const uint64_t *key, const uint16_t *mtu, size_t n, int32_t *group, uint32_t *total);

#endif
