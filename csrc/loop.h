/* The forwarding loop in C: receive a batch, call the engine (a numba cfunc,
 * pylvs/dataplane/engine_cfunc.py), rewrite, send verdicts and frames, all with
 * the GIL released and no Python per packet or per batch (ARCHITECTURE rule 4).
 *
 * pl_gate          the lock between the data-plane loop and the control plane.
 *                  The loop takes it once per batch (pl_gate_batch_enter/leave);
 *                  the control plane (swap, connection sync, collectors, expiry,
 *                  status reads) takes it with pl_gate_enter/leave, which never
 *                  starves: while a control thread waits, the loop queues behind
 *                  it on the turnstile instead of re-taking the mutex at once.
 * struct pl_fwd    what the control plane publishes for the engine: the cfunc,
 *                  the state descriptor of the current generation, the reason
 *                  counters, options, and the real servers' link-layer next hops
 *                  per dest row (direct routing).  The loop reads it only while
 *                  it holds the gate; the control plane writes it only while it
 *                  holds the gate.  engine == NULL: nothing published yet, every
 *                  packet gets the fail-open/closed verdict.
 * struct pl_batch  the adapter's rows and scratch (engine_cfunc.BatchArrays).
 * pl_engine_batch  one batch through the engine: the cfunc, then
 *                  pl_rewrite_batch, then a rewrite failure turns its packet into a
 *                  drop counted under rewrite_base + its PL_RW_* code (the counter
 *                  it had is taken back), exactly as engine.process does.  Returns
 *                  the op count, or -EINVAL when n exceeds the rows.  The caller
 *                  holds the gate.  Tests call it to hold it equal to engine.process.
 * pl_loop          the loop, over one of two sources:
 *   pl_nfq_loop_new  an NFQUEUE queue (nfq.h).  Per packet: PASS -> NF_ACCEPT; NAT,
 *                  TUNNEL -> NF_ACCEPT with the rewritten packet (the kernel routes
 *                  it); DR -> an Ethernet frame to the dest row's next hop, NF_DROP;
 *                  REJECT (the packet became an ICMP error from the VIP) -> sent from
 *                  the local stack (raw IP socket), NF_DROP; DROP and anything else
 *                  -> NF_DROP.
 *                  With PL_LOOP_F_CLASSIFY the queue is the classify pass of a real
 *                  server's packets in raw PREROUTING (netctl.plan, docs/netctl.md):
 *                  the classify cfunc looks each packet up on the reply side of the
 *                  connection table, read-only but for reaping; one of ours gets
 *                  NF_REPEAT with PL_OWNED_MARK added to its mark (the raw chain then
 *                  untracks it and it meets the forwarding queue after routing), any
 *                  other NF_ACCEPT (tracked: the kernel routes and NATs it as any
 *                  router would).  This pass never drops.
 *   pl_xsk_loop_new  AF_XDP sockets (xsk.h) fed by the XDP program.  Nothing goes
 *                  back to the kernel's receive path: NAT, DR and TUNNEL packets all
 *                  leave as frames, to the dest row's next hop or (a NAT reply) to the
 *                  next hop the program's route lookup put in the frame's meta; a
 *                  reply the program could not route (no neighbour entry yet) and
 *                  REJECT go out through the kernel's routing (raw IP socket); a
 *                  tunnel packet too big for the out MTU with DF set gets ICMP
 *                  "fragmentation needed" back to its sender (ip_vs_tunnel_xmit);
 *                  a real server's packet the engine passes (its own traffic, not a
 *                  connection of ours) is forwarded as it came; what the kernel's
 *                  forwarding would do to the TTL is done to every such packet
 *                  (TTL <= 1: dropped, counted).  Any other PASS cannot be handed back
 *                  and is dropped, counted (unpassed: the program passes what the
 *                  engine would, so these are TCP packets without SYN of no
 *                  connection, ...).
 *                  Consecutive TCP segments of a flow leave as one super-packet
 *                  (gro.h), as the kernel's GRO would have merged them.
 *                  Frames leave by AF_PACKET with a virtio-net header (a TCP
 *                  super-packet from a GSO queue leaves whole and the kernel cuts it
 *                  to the out MTU).  A packet whose dest row has no next hop is
 *                  dropped, counted, and its row remembered for pl_loop_misses (the
 *                  control plane resolves it and republishes).
 *   pl_pkt_loop_new  an AF_PACKET tap (pkt.h) on the VIPs' device: direct routing and
 *                  tunnelling (and NAT-in verdicts sent on like DR).  DR, TUNNEL and NAT
 *                  leave as frames to the dest row's next hop, REJECT as a frame back to
 *                  the frame's sender (its MAC, by the device it came in by), PASS is
 *                  done with (the kernel kept its own copy of what the netdev ingress
 *                  rule lets through; a stray segment on a service port is lost, as
 *                  with AF_XDP).  A GSO
 *                  super-packet leaves whole with a virtio-net header (the kernel cuts
 *                  it), except through a tunnel: virtio-net has no IPIP GSO type, so a
 *                  tunnelled TCP packet bigger than the hop's MTU is cut here
 *                  (tso_segments); any other one too big gets ICMP "fragmentation
 *                  needed" when it has DF, as for AF_XDP.
 *                  pl_loop_set_spin: AF_XDP, busy polling for `usec` before each
 *                  sleep (set before pl_loop_run).
 *                  pl_loop_run loops until pl_loop_stop or `max_ms` have passed (so
 *                  a Python caller can look at its own stop event between runs) and
 *                  returns 0, or -errno on a fatal receive or verdict error.  Only
 *                  the engine and the copying of each packet's next hop happen under
 *                  the gate; the frames (one sendmmsg per batch), ICMP errors
 *                  (MSG_DONTWAIT: a full buffer is a counted error) and verdicts are
 *                  sent after it, so one worker's sends never hold up another worker
 *                  or the control thread.
 */
#ifndef PYLVS_LOOP_H
#define PYLVS_LOOP_H
#include <stddef.h>
#include <stdint.h>

typedef int64_t (*pl_engine_fn)(const uint64_t *state, const uint64_t *batch, int64_t n, double now,
                                int64_t now_ms, int64_t opts, int64_t sweep_budget, int64_t tunnel_src);

enum {                      /* engine.V_* (checked by pylvs.dataplane.io.nfq_loop) */
    PL_V_PASS = 0,
    PL_V_DROP = 1,
    PL_V_NAT = 2,
    PL_V_DR = 3,
    PL_V_TUNNEL = 4,
    PL_V_REJECT = 5
};

enum {
    PL_LOOP_F_FAIL_OPEN = 1,    /* nothing published: accept (else drop) */
    PL_LOOP_F_CLASSIFY = 2,     /* NFQUEUE: the classify pass (below), not the engine */
    PL_LOOP_MISS_MAX = 64       /* DR rows without a next hop remembered between reads */
};

enum {
    /* The mark bit the classify pass sets on a real server's packet of one of our
     * connections (netctl.plan.OWNED_MARK, checked by pylvs.dataplane.io.nfq_loop). */
    PL_OWNED_MARK = 0x40000000
};

struct pl_neigh {           /* one dest row's next hop (direct routing) */
    int32_t ifindex;        /* 0: not resolved */
    uint16_t mtu;
    uint8_t dst[6];         /* the real server's MAC */
    uint8_t src[6];         /* the out interface's MAC */
    uint16_t reserved;
};

struct pl_fwd {
    pl_engine_fn engine;
    pl_engine_fn classify;      /* engine_cfunc.CLASSIFY: V_NAT (ours) or V_PASS per packet */
    const uint64_t *state;      /* engine_cfunc.describe_state */
    int64_t *reasons;           /* Counters.reasons */
    int64_t opts;               /* engine OPT_* bits */
    int64_t tunnel_src;         /* IPIP outer source, host order */
    int64_t rewrite_base;       /* engine.C_REWRITE_BASE */
    int64_t sweep_per_packet;   /* engine.SWEEP_PER_PACKET */
    int64_t sweep_base;         /* engine.SWEEP_BASE */
    const struct pl_neigh *neigh;   /* per dest row, n_neigh rows */
    size_t n_neigh;
};

struct pl_batch {
    const uint64_t *desc;       /* engine_cfunc.BatchArrays.desc */
    size_t rows, stride;
    uint8_t *buf;
    uint32_t *off, *lens, *marks;
    struct pl_rewrite_op *ops;
    uint8_t *verdict;
    int16_t *reason;
    int64_t *dest_row;
    uint8_t *res;
};

struct pl_loop_stats {
    uint64_t packets;           /* packets given a verdict by the engine or the fallback */
    uint64_t batches;
    uint64_t accepted;          /* NFQUEUE: NF_ACCEPT unchanged; AF_PACKET: V_PASS, nothing sent */
    uint64_t owned;             /* classify pass: NF_REPEAT with PL_OWNED_MARK */
    uint64_t dropped;           /* NFQUEUE: NF_DROP (DROP, DR and REJECT sent or not) */
    uint64_t mangled;           /* NFQUEUE: NF_ACCEPT with the rewritten packet */
    uint64_t sent;              /* packets sent as frames to a next hop (NFQUEUE: DR only) */
    uint64_t no_next_hop;       /* a dest row without a next hop: dropped, row noted */
    uint64_t too_big;           /* over the out MTU and not TCP (cannot be cut): dropped */
    uint64_t gso;               /* TCP super-packets sent whole, the kernel cutting them */
    uint64_t send_errors;       /* packets of frames the kernel refused */
    uint64_t rejected;          /* ICMP errors sent for V_REJECT */
    uint64_t reject_send_errors;
    uint64_t routed;            /* AF_XDP: NAT replies handed to the kernel's routing */
    uint64_t route_errors;
    uint64_t frag_needed;       /* AF_XDP: tunnel packets too big with DF: ICMP to the sender */
    uint64_t unpassed;          /* AF_XDP: V_PASS, which a socket cannot hand back: dropped */
    uint64_t ttl_expired;       /* AF_XDP: forwarded with TTL <= 1: dropped */
    uint64_t gro_frames;        /* AF_XDP: super-packets sent (gro.h) ... */
    uint64_t gro_merged;        /* ... and the segments that rode in them after the first */
    uint64_t tso_segments;      /* AF_PACKET: segments of tunnelled TCP packets cut to fit the tunnel */
    uint64_t unpublished;       /* packets that met no published tables */
    uint64_t engine_ns;         /* time inside pl_engine_batch */
    uint64_t gate_wait_ns;      /* time waiting for the gate */
};

struct pl_gate;
struct pl_gate *pl_gate_new(void);
void pl_gate_free(struct pl_gate *g);
void pl_gate_enter(struct pl_gate *g);
void pl_gate_leave(struct pl_gate *g);
void pl_gate_batch_enter(struct pl_gate *g);
void pl_gate_batch_leave(struct pl_gate *g);

int64_t pl_engine_batch(const struct pl_fwd *f, const struct pl_batch *b, size_t n, double now);
double pl_monotonic(void);

struct pl_nfq;
struct pl_xsk;
struct pl_xsk_stats;
struct pl_loop;
struct pl_loop *pl_nfq_loop_new(struct pl_nfq *q, struct pl_gate *g, const struct pl_fwd *f,
                                const struct pl_batch *b, uint32_t flags, int *err);
struct pl_pkt;
struct pl_pkt_stats;
struct pl_loop *pl_pkt_loop_new(struct pl_pkt *pk, struct pl_gate *g, const struct pl_fwd *f,
                                const struct pl_batch *b, uint32_t flags, int *err);
struct pl_loop *pl_xsk_loop_new(struct pl_xsk *const *xs, size_t n_xs, struct pl_gate *g, const struct pl_fwd *f,
                                const struct pl_batch *b, uint32_t flags, int *err);
int pl_loop_run(struct pl_loop *L, int max_ms, int poll_ms);
void pl_loop_stop(struct pl_loop *L);
void pl_loop_set_spin(struct pl_loop *L, uint32_t usec);
void pl_loop_get_stats(const struct pl_loop *L, struct pl_loop_stats *out);
void pl_loop_get_xsk_stats(const struct pl_loop *L, struct pl_xsk_stats *out);
void pl_loop_get_pkt_stats(const struct pl_loop *L, struct pl_pkt_stats *out);
size_t pl_loop_misses(struct pl_loop *L, int64_t *rows, size_t max);
void pl_loop_free(struct pl_loop *L);

#endif
