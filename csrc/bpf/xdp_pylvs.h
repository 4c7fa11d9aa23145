/* What the XDP program (xdp_pylvs.c) and its loader (../xsk.c) share: map keys, the
 * meta in front of each redirected frame, counter slots.  Linux types only: it is
 * compiled for the BPF target as well as for the host. */
#ifndef PYLVS_XDP_H
#define PYLVS_XDP_H
#include <linux/types.h>

#define PL_XDP_PROG_NAME "pylvs_xdp" /* the program's name, as the kernel keeps it */
#define PL_XDP_SERVICES_MAX 4096    /* {vip, port, proto} of the virtual services */
#define PL_XDP_SERVERS_MAX 65536    /* {rip, rport, proto} of the NAT real servers */
#define PL_XDP_QUEUES_MAX 64        /* receive queues per device with a socket */

#define PL_XDP_OPT_FAIL_CLOSED 1   /* options[0]: drop what has no socket (else pass) */

struct pl_xdp_key {
    __be32 addr;
    __be16 port;                /* 0: every port (port-0 service), or ICMP errors */
    __u8 proto;                 /* IPPROTO_TCP/UDP, 0 for ICMP errors */
    __u8 pad;
};

enum {                          /* pl_xdp_meta.kind, and the counter slots */
    PL_XDP_TO_SERVICE = 0,      /* to a VIP: scheduled or looked up */
    PL_XDP_FROM_SERVER = 1,     /* a real server's reply, with the route's next hop */
    PL_XDP_FROM_SERVER_ROUTE = 2, /* a real server's reply the kernel must route (no neighbour yet, ...) */
    PL_XDP_C_LOCAL = 3,         /* from a real server to the director itself: passed */
    PL_XDP_C_PASSED = 4,        /* IPv4 TCP/UDP/ICMP error of no service: passed */
    PL_XDP_C_SERVER_FRAGMENT = 5, /* an IP fragment from a NAT real server: dropped */
    PL_XDP_N_COUNTERS = 6
};

struct pl_xdp_meta {            /* in front of the frame (bpf_xdp_adjust_meta), 4-byte multiple */
    __u32 kind;
    __u32 ifindex;              /* FROM_SERVER: the out device ... */
    __u8 dst[6];                /* ... the next hop's MAC ... */
    __u8 src[6];                /* ... and the out device's */
    __u16 mtu;                  /* unused: bpf_fib_lookup refuses what does not fit */
    __u16 reserved;
};

#endif
