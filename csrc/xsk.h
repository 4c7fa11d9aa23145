/* AF_XDP receive for the C loop (--io afxdp): the XDP program on a device, and AF_XDP
 * sockets in copy mode that take what it redirects.  libbpf loads the program; the
 * sockets and their rings are set up here from linux/if_xdp.h (no libxdp).
 *
 * pl_xdp_attach     load bpf/xdp_pylvs.o (built by `make deps`) and attach it to
 *                   `ifindex`: mode PL_XDP_MODE_NATIVE (the driver's hook; veth has it),
 *                   PL_XDP_MODE_SKB (generic), or PL_XDP_MODE_AUTO (native, else skb).
 *                   Refuses a device that already has an XDP program (EEXIST).
 *                   `options`: PL_XSK_OPT_FAIL_CLOSED drops a frame for a queue with no
 *                   socket (the director gone), else the kernel gets it.
 *                   NULL and *err = errno on failure.
 * pl_xdp_mode       the mode it was attached in.
 * pl_xdp_set_keys   replace the contents of the `services` (PL_XDP_MAP_SERVICES) or
 *                   `servers` (PL_XDP_MAP_SERVERS) map: n keys of host-order address,
 *                   port, protocol.  0 or -errno; a key that fails leaves the map holding
 *                   the old keys that were not deleted and the new ones added so far.
 * pl_xdp_counters   the program's counters summed over CPUs (PL_XDP_N_COUNTERS of them,
 *                   bpf/xdp_pylvs.h).
 * pl_xdp_detach     detach (only our program: a program attached since is left) and free.
 * pl_xdp_clean_stale  detach a program of ours (by its name, pylvs_xdp) that a killed
 *                   director left on `ifindex`: 1 if removed, 0 if none, -errno.
 *
 * pl_xsk_open       an AF_XDP socket on the program's device, receive queue `queue`, copy
 *                   mode, receive only, its UMEM of `frames` 4 KiB frames all on the fill
 *                   ring; registered in the program's xsks map.  NULL and *err on failure.
 * pl_xsk_close      unregister and free.
 * pl_xsk_recv       fill up to `rows` rows of a batch from the sockets' receive rings:
 *                   waits at most poll_ms for the first frame (poll), then takes what is
 *                   there; with spin_us, looks again without sleeping for that long
 *                   before it polls (busy polling: no wake-up latency, a core spent).  Row i gets the IP packet at buf[i*stride + PL_HEADROOM]
 *                   (off[i], lens[i]), its meta in meta[i]; marks are 0.  A TCP/UDP
 *                   checksum left partial by a local sender (see pl_csum_l4_partial) is
 *                   completed.  Frames go back on the fill ring at once.  Returns the rows
 *                   filled, or -errno when poll fails.
 */
#ifndef PYLVS_XSK_H
#define PYLVS_XSK_H
#include <stddef.h>
#include <stdint.h>

enum {
    PL_XDP_MODE_AUTO = 0,
    PL_XDP_MODE_NATIVE = 1,
    PL_XDP_MODE_SKB = 2,
    PL_XDP_MAP_SERVICES = 0,
    PL_XDP_MAP_SERVERS = 1,
    PL_XSK_OPT_FAIL_CLOSED = 1, /* PL_XDP_OPT_FAIL_CLOSED: drop what finds no socket */
    PL_XSK_COUNTERS = 6,
    PL_XSK_QUEUES_MAX = 64,     /* PL_XDP_QUEUES_MAX: sockets per device */        /* PL_XDP_N_COUNTERS (checked in xsk.c) */
    PL_XSK_FRAME = 4096
};

struct pl_xsk_meta {            /* struct pl_xdp_meta, host view (checked in xsk.c) */
    uint32_t kind;
    uint32_t ifindex;
    uint8_t dst[6];
    uint8_t src[6];
    uint16_t mtu;
    uint16_t reserved;
};

struct pl_xsk_stats {
    uint64_t frames;            /* frames taken from receive rings */
    uint64_t polls;
    uint64_t short_frames;      /* not Ethernet + IPv4: dropped */
    uint64_t oversize;          /* longer than a row: dropped */
    uint64_t bad_meta;          /* meta of an unknown kind: taken as a service packet */
    uint64_t csum_completed;
    uint64_t fill_short;        /* frames the fill ring had no room for (never expected) */
};

struct pl_xdp;
struct pl_xsk;
struct pl_xdp *pl_xdp_attach(const char *obj_path, int ifindex, int mode, uint32_t options, int *err);
int pl_xdp_mode(const struct pl_xdp *x);
int pl_xdp_set_keys(struct pl_xdp *x, int map, const uint32_t *addr, const uint16_t *port,
                    const uint8_t *proto, size_t n);
int pl_xdp_counters(const struct pl_xdp *x, uint64_t *out);
void pl_xdp_detach(struct pl_xdp *x);
int pl_xdp_clean_stale(int ifindex);

struct pl_xsk *pl_xsk_open(struct pl_xdp *x, uint32_t queue, uint32_t frames, int *err);
void pl_xsk_close(struct pl_xsk *s);
long pl_xsk_recv(struct pl_xsk *const *xs, size_t n_xs, uint8_t *buf, size_t rows, size_t stride,
                 uint32_t *off, uint32_t *lens, uint32_t *marks, struct pl_xsk_meta *meta, int poll_ms,
                 uint32_t spin_us, struct pl_xsk_stats *st);

#endif
