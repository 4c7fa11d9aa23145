/* The XDP program of the AF_XDP adapter (--io afxdp): hand the director's socket only
 * the frames it forwards, and everything else to the kernel untouched.
 *
 * Built by `make deps` (clang -target bpf) into pylvs/dataplane/io/xdp_pylvs.o and
 * attached, one instance per device, by csrc/xsk.c.  Redirected to the AF_XDP socket
 * of the frame's receive queue (the xsks map; none there: XDP_PASS):
 *   - TCP/UDP to a virtual service: services{vip, port, proto}, or {vip, 0, proto}
 *     for a port-0 service (every port);
 *   - ICMP errors (destination unreachable, source quench, time exceeded) to a VIP:
 *     services{vip, 0, 0} (the engine translates those about its connections);
 *   - NAT only, the real servers' return traffic: TCP/UDP from servers{rip, rport,
 *     proto} and ICMP errors from servers{rip, 0, 0}, when the kernel would forward it
 *     (bpf_fib_lookup; traffic to the director itself, e.g. health-check replies, goes
 *     to the kernel).  The route's next hop travels in front of the frame as
 *     struct pl_xdp_meta, so the reply leaves without a second lookup.
 * A redirected frame whose queue has no socket (the director stopped without detaching
 * the program) goes to the kernel, or is dropped with PL_XDP_OPT_FAIL_CLOSED: the
 * NFQUEUE rules' --queue-bypass choice.
 * Passed to the kernel: everything else, IP fragments included (the kernel reassembles
 * what is its own; the engine drops fragments, as NFQUEUE never shows it any), except
 * a NAT real server's fragments: dropped, as they would leave with the private source.
 * Map keys are in network byte order, as the packet has them. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdp_pylvs.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#define IP_MF_OFFSET 0x3fff     /* the MF flag and the fragment offset (RFC 791) */
#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_TIME_EXCEEDED 11

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, PL_XDP_SERVICES_MAX);
    __type(key, struct pl_xdp_key);
    __type(value, __u8);
} services SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, PL_XDP_SERVERS_MAX);
    __type(key, struct pl_xdp_key);
    __type(value, __u8);
} servers SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, PL_XDP_QUEUES_MAX);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, __u32);
} options SEC(".maps");     /* PL_XDP_OPT_* bits, set by the loader */

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, PL_XDP_N_COUNTERS);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
    __u64 *c = bpf_map_lookup_elem(&counters, &which);
    if (c)
        *c += 1;
}

static __always_inline int is_icmp_error(__u8 type)
{
    return type == ICMP_DEST_UNREACH || type == ICMP_SOURCE_QUENCH || type == ICMP_TIME_EXCEEDED;
}

/* Put the meta in front of the frame and redirect it to this queue's socket. */
static __always_inline int redirect(struct xdp_md *ctx, __u32 kind, const struct bpf_fib_lookup *fib)
{
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct pl_xdp_meta)))
        return XDP_PASS; /* no room: the kernel has it (counted) */
    void *data = (void *)(long)ctx->data;
    struct pl_xdp_meta *m = (void *)(long)ctx->data_meta;
    if ((void *)(m + 1) > data)
        return XDP_PASS;
    m->kind = kind;
    m->ifindex = 0;
    m->mtu = 0;
    __builtin_memset(m->dst, 0, 6);
    __builtin_memset(m->src, 0, 6);
    m->reserved = 0;
    if (fib) {
        m->ifindex = fib->ifindex;
        __builtin_memcpy(m->dst, fib->dmac, 6);
        __builtin_memcpy(m->src, fib->smac, 6);
    }
    count(kind);
    /* no socket on this queue (the director is gone): pass, or drop with --fail-closed */
    __u32 zero = 0;
    __u32 *opt = bpf_map_lookup_elem(&options, &zero);
    __u64 fallback = (opt && (*opt & PL_XDP_OPT_FAIL_CLOSED)) ? XDP_DROP : XDP_PASS;
    return bpf_redirect_map(&xsks, ctx->rx_queue_index, fallback);
}

/* A real server's packet: ours only if the kernel would forward it; its next hop with it. */
static __always_inline int from_server(struct xdp_md *ctx, struct iphdr *ip)
{
    struct bpf_fib_lookup fib = {};
    fib.family = AF_INET;
    fib.tos = ip->tos;
    fib.l4_protocol = ip->protocol;
    fib.tot_len = bpf_ntohs(ip->tot_len);
    fib.ipv4_src = ip->saddr;
    fib.ipv4_dst = ip->daddr;
    fib.ifindex = ctx->ingress_ifindex;
    long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
    if (rc == BPF_FIB_LKUP_RET_NOT_FWDED) {
        count(PL_XDP_C_LOCAL);
        return XDP_PASS; /* to the director itself */
    }
    if (rc == BPF_FIB_LKUP_RET_SUCCESS)
        return redirect(ctx, PL_XDP_FROM_SERVER, &fib);
    /* no neighbour entry yet, too big for the out device, ...: the loop sends it through
     * the kernel's routing once rewritten */
    return redirect(ctx, PL_XDP_FROM_SERVER_ROUTE, 0);
}

SEC("xdp")
int pylvs_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return XDP_PASS;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5)
        return XDP_PASS;
    if (ip->frag_off & bpf_htons(IP_MF_OFFSET)) {
        /* A NAT server's fragment would be forwarded with its private source (NFQUEUE
         * sees it reassembled; here nothing can): dropped, counted.  Others: the kernel's. */
        struct pl_xdp_key fk = {.addr = ip->saddr};
        if (bpf_map_lookup_elem(&servers, &fk)) {
            count(PL_XDP_C_SERVER_FRAGMENT);
            return XDP_DROP;
        }
        return XDP_PASS;
    }
    __u8 *l4 = (__u8 *)ip + ip->ihl * 4;
    struct pl_xdp_key k = {.proto = ip->protocol};
    __u16 sport = 0, dport = 0;
    if (ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) {
        if ((void *)(l4 + 4) > end)
            return XDP_PASS;
        sport = *(__u16 *)l4;
        dport = *(__u16 *)(l4 + 2);
    } else if (ip->protocol == IPPROTO_ICMP) {
        if ((void *)(l4 + 1) > end || !is_icmp_error(l4[0]))
            return XDP_PASS; /* echo and the like: the kernel answers for the VIP */
        k.proto = 0;
    } else {
        return XDP_PASS;
    }
    k.addr = ip->daddr;
    k.port = dport;
    if (bpf_map_lookup_elem(&services, &k))
        return redirect(ctx, PL_XDP_TO_SERVICE, 0);
    if (k.port) {
        k.port = 0; /* a port-0 service takes every port */
        if (bpf_map_lookup_elem(&services, &k))
            return redirect(ctx, PL_XDP_TO_SERVICE, 0);
    }
    k.addr = ip->saddr;
    k.port = sport;
    if (bpf_map_lookup_elem(&servers, &k))
        return from_server(ctx, ip);
    if (k.port) {
        k.port = 0; /* a real server of a port-0 service answers from any port */
        if (bpf_map_lookup_elem(&servers, &k))
            return from_server(ctx, ip);
    }
    count(PL_XDP_C_PASSED);
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL"; /* bpf_fib_lookup is a GPL-only helper */
