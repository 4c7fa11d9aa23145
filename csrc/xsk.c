/* AF_XDP receive for the C loop (see xsk.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/if_link.h>
#include <linux/if_xdp.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/xdp_pylvs.h"
#include "checksum.h"
#include "rewrite.h"
#include "xsk.h"

#ifndef SOL_XDP
#define SOL_XDP 283
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
#define ETH_HLEN_ 14
#define IPV4_MIN 20

_Static_assert(sizeof(struct pl_xsk_meta) == sizeof(struct pl_xdp_meta), "meta layout");
_Static_assert(offsetof(struct pl_xsk_meta, dst) == offsetof(struct pl_xdp_meta, dst), "meta layout");
_Static_assert(offsetof(struct pl_xsk_meta, reserved) == offsetof(struct pl_xdp_meta, reserved), "meta layout");
_Static_assert((int)PL_XSK_OPT_FAIL_CLOSED == PL_XDP_OPT_FAIL_CLOSED, "options");
_Static_assert((int)PL_XSK_QUEUES_MAX == PL_XDP_QUEUES_MAX, "queues");
_Static_assert((int)PL_XSK_COUNTERS == (int)PL_XDP_N_COUNTERS, "counter slots");

/* ---- the program ------------------------------------------------------------------- */

struct pl_xdp {
    struct bpf_object *obj;
    int ifindex;
    int mode;
    int prog_fd, services_fd, servers_fd, xsks_fd, counters_fd, options_fd;
};

static int map_fd(struct bpf_object *obj, const char *name)
{
    struct bpf_map *m = bpf_object__find_map_by_name(obj, name);
    return m ? bpf_map__fd(m) : -1;
}

struct pl_xdp *pl_xdp_attach(const char *obj_path, int ifindex, int mode, uint32_t options, int *err)
{
    struct pl_xdp *x = calloc(1, sizeof(*x));
    int e = ENOMEM;
    if (!x)
        goto fail;
    x->ifindex = ifindex;
    x->obj = bpf_object__open_file(obj_path, NULL);
    if (!x->obj) {
        e = errno ? errno : ENOENT;
        goto fail;
    }
    int rc = bpf_object__load(x->obj);
    if (rc) {
        e = -rc;
        goto fail;
    }
    struct bpf_program *p = bpf_object__find_program_by_name(x->obj, "pylvs_xdp");
    x->prog_fd = p ? bpf_program__fd(p) : -1;
    x->services_fd = map_fd(x->obj, "services");
    x->servers_fd = map_fd(x->obj, "servers");
    x->xsks_fd = map_fd(x->obj, "xsks");
    x->counters_fd = map_fd(x->obj, "counters");
    x->options_fd = map_fd(x->obj, "options");
    if (x->prog_fd < 0 || x->services_fd < 0 || x->servers_fd < 0 || x->xsks_fd < 0 || x->counters_fd < 0 ||
        x->options_fd < 0) {
        e = ENOENT;
        goto fail;
    }
    uint32_t zero = 0;
    if (bpf_map_update_elem(x->options_fd, &zero, &options, BPF_ANY) < 0) {
        e = errno;
        goto fail;
    }
    /* never replace someone else's program: UPDATE_IF_NOEXIST */
    if (mode != PL_XDP_MODE_SKB) {
        rc = bpf_xdp_attach(ifindex, x->prog_fd, XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_DRV_MODE, NULL);
        if (rc == 0)
            x->mode = PL_XDP_MODE_NATIVE;
        else if (mode == PL_XDP_MODE_NATIVE || rc == -EEXIST || rc == -EBUSY) {
            e = -rc;
            goto fail;
        }
    }
    if (!x->mode) {
        rc = bpf_xdp_attach(ifindex, x->prog_fd, XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_SKB_MODE, NULL);
        if (rc) {
            e = -rc;
            goto fail;
        }
        x->mode = PL_XDP_MODE_SKB;
    }
    return x;
fail:
    if (err)
        *err = e;
    if (x) {
        if (x->obj)
            bpf_object__close(x->obj);
        free(x);
    }
    return NULL;
}

int pl_xdp_mode(const struct pl_xdp *x)
{
    return x->mode;
}

static void key_of(struct pl_xdp_key *k, uint32_t addr, uint16_t port, uint8_t proto)
{
    memset(k, 0, sizeof(*k));
    k->addr = htonl(addr);
    k->port = htons(port);
    k->proto = proto;
}

static int key_cmp(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct pl_xdp_key));
}

int pl_xdp_set_keys(struct pl_xdp *x, int map, const uint32_t *addr, const uint16_t *port, const uint8_t *proto,
                    size_t n)
{
    int fd = map == PL_XDP_MAP_SERVERS ? x->servers_fd : x->services_fd;
    struct pl_xdp_key *want = calloc(n ? n : 1, sizeof(*want));
    if (!want)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        key_of(&want[i], addr[i], port[i], proto[i]);
    qsort(want, n, sizeof(*want), key_cmp);
    struct pl_xdp_key cur, next;
    uint8_t one = 1;
    int rc = 0;
    /* delete the keys that are not wanted any more; then add the wanted ones */
    int have = bpf_map_get_next_key(fd, NULL, &cur) == 0;
    while (have && rc == 0) {
        int more = bpf_map_get_next_key(fd, &cur, &next) == 0;
        if (!bsearch(&cur, want, n, sizeof(*want), key_cmp) && bpf_map_delete_elem(fd, &cur) < 0 && errno != ENOENT)
            rc = -errno;
        cur = next;
        have = more;
    }
    for (size_t i = 0; i < n && rc == 0; i++)
        if (bpf_map_update_elem(fd, &want[i], &one, BPF_ANY) < 0)
            rc = -errno;
    free(want);
    return rc;
}

int pl_xdp_counters(const struct pl_xdp *x, uint64_t *out)
{
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0)
        return ncpu;
    uint64_t *v = calloc((size_t)ncpu, sizeof(*v));
    if (!v)
        return -ENOMEM;
    for (uint32_t k = 0; k < PL_XDP_N_COUNTERS; k++) {
        out[k] = 0;
        if (bpf_map_lookup_elem(x->counters_fd, &k, v) == 0)
            for (int c = 0; c < ncpu; c++)
                out[k] += v[c];
    }
    free(v);
    return 0;
}

void pl_xdp_detach(struct pl_xdp *x)
{
    if (!x)
        return;
    struct bpf_xdp_attach_opts o = {.sz = sizeof(o), .old_prog_fd = x->prog_fd};
    uint32_t flags = XDP_FLAGS_REPLACE | (x->mode == PL_XDP_MODE_NATIVE ? XDP_FLAGS_DRV_MODE : XDP_FLAGS_SKB_MODE);
    bpf_xdp_detach(x->ifindex, flags, &o); /* fails harmlessly if the device or our program is gone */
    bpf_object__close(x->obj);
    free(x);
}

/* ---- the sockets ------------------------------------------------------------------- */

struct ring {                   /* one mmapped AF_XDP ring: single producer, single consumer */
    _Atomic uint32_t *producer, *consumer;
    void *descs;
    uint32_t mask;
    void *map;
    size_t map_len;
};

struct pl_xsk {
    int fd;
    uint32_t queue;
    struct pl_xdp *x;
    uint8_t *umem;
    size_t umem_len;
    uint32_t frames;
    struct ring fq, cq, rx;
};

static int map_ring(int fd, struct ring *r, const struct xdp_ring_offset *o, uint32_t size, size_t desc_size,
                    off_t pgoff)
{
    r->map_len = o->desc + size * desc_size;
    r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff);
    if (r->map == MAP_FAILED) {
        r->map = NULL;
        return -errno;
    }
    r->producer = (_Atomic uint32_t *)((uint8_t *)r->map + o->producer);
    r->consumer = (_Atomic uint32_t *)((uint8_t *)r->map + o->consumer);
    r->descs = (uint8_t *)r->map + o->desc;
    r->mask = size - 1;
    return 0;
}

static void unmap_ring(struct ring *r)
{
    if (r->map)
        munmap(r->map, r->map_len);
    r->map = NULL;
}

/* Put `n` frame addresses on the fill ring; returns how many fitted. */
static uint32_t fill(struct pl_xsk *s, const uint64_t *addrs, uint32_t n)
{
    uint32_t prod = atomic_load_explicit(s->fq.producer, memory_order_relaxed);
    uint32_t cons = atomic_load_explicit(s->fq.consumer, memory_order_acquire);
    uint32_t room = s->fq.mask + 1 - (prod - cons);
    if (n > room)
        n = room;
    uint64_t *ring = s->fq.descs;
    for (uint32_t i = 0; i < n; i++)
        ring[(prod + i) & s->fq.mask] = addrs[i];
    atomic_store_explicit(s->fq.producer, prod + n, memory_order_release);
    return n;
}

struct pl_xsk *pl_xsk_open(struct pl_xdp *x, uint32_t queue, uint32_t frames, int *err)
{
    struct pl_xsk *s = calloc(1, sizeof(*s));
    int e = ENOMEM;
    if (!s)
        goto fail;
    s->fd = -1;
    if (frames < 64 || (frames & (frames - 1)) || queue >= PL_XDP_QUEUES_MAX) {
        e = EINVAL;
        goto fail;
    }
    s->x = x;
    s->queue = queue;
    s->frames = frames;
    s->umem_len = (size_t)frames * PL_XSK_FRAME;
    s->umem = mmap(NULL, s->umem_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->umem == MAP_FAILED) {
        s->umem = NULL;
        e = errno;
        goto fail;
    }
    s->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        e = errno;
        goto fail;
    }
    struct xdp_umem_reg mr = {.addr = (uintptr_t)s->umem, .len = s->umem_len, .chunk_size = PL_XSK_FRAME};
    int size = (int)frames;
    if (setsockopt(s->fd, SOL_XDP, XDP_UMEM_REG, &mr, sizeof(mr)) < 0 ||
        setsockopt(s->fd, SOL_XDP, XDP_UMEM_FILL_RING, &size, sizeof(size)) < 0 ||
        setsockopt(s->fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &size, sizeof(size)) < 0 ||
        setsockopt(s->fd, SOL_XDP, XDP_RX_RING, &size, sizeof(size)) < 0) {
        e = errno;
        goto fail;
    }
    struct xdp_mmap_offsets off;
    socklen_t olen = sizeof(off);
    if (getsockopt(s->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &olen) < 0) {
        e = errno;
        goto fail;
    }
    int rc;
    if ((rc = map_ring(s->fd, &s->fq, &off.fr, frames, sizeof(uint64_t), XDP_UMEM_PGOFF_FILL_RING)) ||
        (rc = map_ring(s->fd, &s->cq, &off.cr, frames, sizeof(uint64_t), XDP_UMEM_PGOFF_COMPLETION_RING)) ||
        (rc = map_ring(s->fd, &s->rx, &off.rx, frames, sizeof(struct xdp_desc), XDP_PGOFF_RX_RING))) {
        e = -rc;
        goto fail;
    }
    struct sockaddr_xdp sx = {.sxdp_family = AF_XDP, .sxdp_ifindex = (uint32_t)x->ifindex,
                              .sxdp_queue_id = queue, .sxdp_flags = XDP_COPY};
    if (bind(s->fd, (struct sockaddr *)&sx, sizeof(sx)) < 0) {
        e = errno;
        goto fail;
    }
    for (uint32_t i = 0; i < frames; i++) {
        uint64_t a = (uint64_t)i * PL_XSK_FRAME;
        fill(s, &a, 1);
    }
    if (bpf_map_update_elem(x->xsks_fd, &queue, &s->fd, BPF_ANY) < 0) {
        e = errno;
        goto fail;
    }
    return s;
fail:
    if (err)
        *err = e;
    pl_xsk_close(s);
    return NULL;
}

void pl_xsk_close(struct pl_xsk *s)
{
    if (!s)
        return;
    /* no map delete: the program may be gone already, and the kernel removes a
     * released socket from every XSKMAP itself (xsk_delete_from_maps) */
    unmap_ring(&s->rx);
    unmap_ring(&s->cq);
    unmap_ring(&s->fq);
    if (s->fd >= 0)
        close(s->fd);
    if (s->umem)
        munmap(s->umem, s->umem_len);
    free(s);
}

/* Take up to `rows - w` frames from one socket into rows w.. of the batch. */
static size_t take(struct pl_xsk *s, uint8_t *buf, size_t w, size_t rows, size_t stride, uint32_t *off,
                   uint32_t *lens, uint32_t *marks, struct pl_xsk_meta *meta, struct pl_xsk_stats *st)
{
    uint32_t cons = atomic_load_explicit(s->rx.consumer, memory_order_relaxed);
    uint32_t prod = atomic_load_explicit(s->rx.producer, memory_order_acquire);
    uint32_t avail = prod - cons, n = 0;
    const struct xdp_desc *d = s->rx.descs;
    uint64_t addrs[256];
    while (n < avail && w < rows && n < 256) {
        const struct xdp_desc *e = &d[(cons + n) & s->rx.mask];
        uint64_t a = e->addr;
        uint32_t len = e->len;
        addrs[n++] = a & ~(uint64_t)(PL_XSK_FRAME - 1);
        st->frames++;
        if (a + len > s->umem_len || (a & (PL_XSK_FRAME - 1)) < sizeof(struct pl_xdp_meta) || len < ETH_HLEN_ + IPV4_MIN) {
            st->short_frames++;
            continue;
        }
        const uint8_t *frame = s->umem + a;
        uint32_t iplen = len - ETH_HLEN_;
        if ((size_t)PL_HEADROOM + iplen > stride) {
            st->oversize++;
            continue;
        }
        uint8_t *ip = buf + w * stride + PL_HEADROOM;
        memcpy(ip, frame + ETH_HLEN_, iplen);
        memcpy(&meta[w], frame - sizeof(struct pl_xdp_meta), sizeof(meta[w]));
        if (meta[w].kind > PL_XDP_FROM_SERVER_ROUTE) {
            st->bad_meta++;
            memset(&meta[w], 0, sizeof(meta[w]));
        }
        if (pl_csum_l4_partial(ip, iplen) && pl_csum_l4_complete(ip, iplen))
            st->csum_completed++;
        off[w] = PL_HEADROOM;
        lens[w] = iplen;
        marks[w] = 0;
        w++;
    }
    if (n) {
        atomic_store_explicit(s->rx.consumer, cons + n, memory_order_release);
        uint32_t put = fill(s, addrs, n);
        st->fill_short += n - put;
    }
    return w;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Every socket in turn, from a first one that moves on at each call, so a busy queue
 * cannot keep the batch to itself while another's ring overflows. */
static size_t take_all(struct pl_xsk *const *xs, size_t n_xs, uint8_t *buf, size_t w, size_t rows, size_t stride,
                       uint32_t *off, uint32_t *lens, uint32_t *marks, struct pl_xsk_meta *meta,
                       struct pl_xsk_stats *st)
{
    size_t first = (size_t)(st->polls + st->frames) % n_xs;
    for (size_t j = 0; j < n_xs && w < rows; j++)
        w = take(xs[(first + j) % n_xs], buf, w, rows, stride, off, lens, marks, meta, st);
    return w;
}

long pl_xsk_recv(struct pl_xsk *const *xs, size_t n_xs, uint8_t *buf, size_t rows, size_t stride, uint32_t *off,
                 uint32_t *lens, uint32_t *marks, struct pl_xsk_meta *meta, int poll_ms, uint32_t spin_us,
                 struct pl_xsk_stats *st)
{
    size_t w = 0;
    uint64_t spin_until = 0;
    if (n_xs == 0)
        return 0;
    for (;;) {
        w = take_all(xs, n_xs, buf, w, rows, stride, off, lens, marks, meta, st);
        if (w)
            return (long)w;
        if (spin_us) { /* look again without sleeping: no wake-up to wait for */
            uint64_t now = mono_ns();
            if (!spin_until)
                spin_until = now + (uint64_t)spin_us * 1000u;
            if (now < spin_until)
                continue;
        }
        break;
    }
    struct pollfd pfd[PL_XDP_QUEUES_MAX * 4];
    size_t np = n_xs < sizeof(pfd) / sizeof(pfd[0]) ? n_xs : sizeof(pfd) / sizeof(pfd[0]);
    for (size_t k = 0; k < np; k++)
        pfd[k] = (struct pollfd){.fd = xs[k]->fd, .events = POLLIN};
    st->polls++;
    if (poll(pfd, np, poll_ms) < 0 && errno != EINTR)
        return -errno;
    return (long)take_all(xs, n_xs, buf, w, rows, stride, off, lens, marks, meta, st);
}

/* A program of ours left attached by a director that died (SIGKILL leaves it: XDP
 * programs attached by netlink outlive their loader): detach it.  1 if one was removed,
 * 0 if the device has none of ours, -errno on failure. */
int pl_xdp_clean_stale(int ifindex)
{
    static const uint32_t modes[] = {XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
    int removed = 0;
    for (size_t k = 0; k < sizeof(modes) / sizeof(modes[0]); k++) {
        uint32_t id = 0;
        if (bpf_xdp_query_id(ifindex, (int)modes[k], &id) || id == 0)
            continue;
        int fd = bpf_prog_get_fd_by_id(id);
        if (fd < 0)
            continue;
        struct bpf_prog_info info;
        uint32_t len = sizeof(info);
        memset(&info, 0, sizeof(info));
        int ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && strcmp(info.name, PL_XDP_PROG_NAME) == 0;
        if (ours) {
            struct bpf_xdp_attach_opts o = {.sz = sizeof(o), .old_prog_fd = fd};
            int rc = bpf_xdp_detach(ifindex, XDP_FLAGS_REPLACE | modes[k], &o);
            if (rc) {
                close(fd);
                return rc;
            }
            removed = 1;
        }
        close(fd);
    }
    return removed;
}
