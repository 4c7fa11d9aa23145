/* Linear C versions of the kernel's IPVS schedulers, for the benchmark.
 * Written from net/netfilter/ipvs/ip_vs_{rr,wrr,lc,wlc,sed,nq,fo,ovf,dh,sh,mh,
 * lblc,lblcr}.c onto pylvs.sched's flat arrays (layouts: the pylvs/sched modules). */
#include "sched_linear.h"

#include <stdbool.h>

enum { W, ACT, INACT, FLAGS, UTHR, LTHR, LASTW, ADDR, PORT, FWD, NF }; /* FWD: read by the engine only */
#define F_AVAILABLE 0x1
#define F_OVERLOAD 0x2
#define D(i, f) dest[(i) * NF + (f)]
#define MH_TAB_SIZE 4093 /* kernel default, CONFIG_IP_VS_MH_TAB_INDEX = 12 */

/* one uniform signature; each algorithm reads only the keys it needs */
#define U __attribute__((unused))
#define SCHED_ARGS int64_t *dest, U int64_t rows, U int64_t *state, U uint32_t caddr, U uint16_t cport, U uint32_t daddr, U int64_t now

static inline bool in_list(const int64_t *dest, int64_t i) { return D(i, FLAGS) & F_AVAILABLE; }
static inline bool eligible(const int64_t *dest, int64_t i)
{
    int64_t f = D(i, FLAGS);
    return (f & F_AVAILABLE) && !(f & F_OVERLOAD) && D(i, W) > 0;
}
static inline int64_t overhead(const int64_t *dest, int64_t i) { return (D(i, ACT) << 8) + D(i, INACT); }

static inline void charge(int64_t *dest, int64_t i, int64_t mode)
{
    D(i, INACT) += 1; /* ip_vs_bind_dest: new connections start inactive */
    if (D(i, UTHR) && D(i, ACT) + D(i, INACT) >= D(i, UTHR))
        D(i, FLAGS) |= F_OVERLOAD;
    if (mode == 2) {
        D(i, INACT) -= 1;
        D(i, ACT) += 1;
    }
}

static inline uint32_t hash_32(uint32_t v, int bits) { return (uint32_t)(v * 0x61C88647u) >> (32 - bits); }

/* ------------------------------------------------------------------ rr, wrr */

static int64_t rr_one(SCHED_ARGS)
{
    int64_t i = state[0];
    for (int64_t k = 0; k < rows; k++) {
        if (++i >= rows)
            i = 0;
        if (eligible(dest, i))
            return state[0] = i;
    }
    return -1;
}

enum { CL, CW, MW, DI };
static int64_t wrr_one(SCHED_ARGS)
{
    int64_t pos = state[CL], last = pos, stop = -2, di = state[DI];
    bool last_pass = false, restarted = false;
    if (state[MW] == 0)
        return -1;
    for (;;) {
        for (int64_t i = pos + 1; i < rows; i++) {
            if (!in_list(dest, i))
                continue;
            if (!(D(i, FLAGS) & F_OVERLOAD) && D(i, W) >= state[CW])
                return state[CL] = i;
            if (i == stop) {
                state[CL] = i;
                return -1;
            }
        }
        pos = -1;
        state[CW] -= di;
        if (state[CW] <= 0) {
            state[CW] = state[MW];
            if (last_pass || last == -1) {
                state[CL] = -1;
                return -1;
            }
            restarted = true;
        }
        last_pass = state[CW] <= di;
        if (last_pass && restarted && last != -1)
            stop = last;
    }
}

/* ------------------------------------------------------------ lc family (linear) */

static int64_t lc_one(SCHED_ARGS)
{
    int64_t least = -1, loh = 0;
    for (int64_t i = 0; i < rows; i++) {
        if (!eligible(dest, i))
            continue;
        int64_t doh = overhead(dest, i);
        if (least < 0 || doh < loh) {
            least = i;
            loh = doh;
        }
    }
    return least;
}

static int64_t wlc_scan(const int64_t *dest, int64_t rows)
{
    int64_t least = -1, loh = 0, i = 0;
    for (; i < rows; i++)
        if (eligible(dest, i)) {
            least = i;
            loh = overhead(dest, i);
            break;
        }
    if (least < 0)
        return -1;
    for (i++; i < rows; i++) {
        if (!in_list(dest, i) || (D(i, FLAGS) & F_OVERLOAD))
            continue;
        int64_t doh = overhead(dest, i);
        if (loh * D(i, W) > doh * D(least, W)) {
            least = i;
            loh = doh;
        }
    }
    return least;
}
static int64_t wlc_one(SCHED_ARGS) { return wlc_scan(dest, rows); }

static int64_t sed_one(SCHED_ARGS)
{
    int64_t least = -1, loh = 0, i = 0;
    for (; i < rows; i++)
        if (eligible(dest, i)) {
            least = i;
            loh = D(i, ACT) + 1;
            break;
        }
    if (least < 0)
        return -1;
    for (i++; i < rows; i++) {
        if (!in_list(dest, i) || (D(i, FLAGS) & F_OVERLOAD))
            continue;
        int64_t doh = D(i, ACT) + 1;
        if (loh * D(i, W) > doh * D(least, W)) {
            least = i;
            loh = doh;
        }
    }
    return least;
}

static int64_t nq_one(SCHED_ARGS)
{
    int64_t least = -1, loh = 0;
    for (int64_t i = 0; i < rows; i++) {
        if (!eligible(dest, i))
            continue;
        int64_t doh = D(i, ACT) + 1;
        if (D(i, ACT) == 0)
            return i;
        if (least < 0 || loh * D(i, W) > doh * D(least, W)) {
            least = i;
            loh = doh;
        }
    }
    return least;
}

static int64_t fo_one(SCHED_ARGS)
{
    int64_t h = -1;
    for (int64_t i = 0; i < rows; i++)
        if (eligible(dest, i) && (h < 0 || D(i, W) > D(h, W)))
            h = i;
    return h;
}

static int64_t ovf_one(SCHED_ARGS)
{
    int64_t h = -1;
    for (int64_t i = 0; i < rows; i++) {
        if (!eligible(dest, i) || D(i, ACT) > D(i, W))
            continue;
        if (h < 0 || D(i, W) > D(h, W))
            h = i;
    }
    return h;
}

/* ------------------------------------------------------------------ dh, sh, mh */

static int64_t dh_one(SCHED_ARGS)
{
    int64_t d = state[1 + hash_32(daddr, 8)];
    return (d >= 0 && eligible(dest, d)) ? d : -1;
}

static inline uint32_t sh_key(uint32_t addr, uint32_t port, uint32_t offset)
{
    return (offset + hash_32(port + addr, 8)) & 255;
}

static int64_t sh_one(SCHED_ARGS)
{
    uint32_t port = (state[0] & 2) ? cport : 0;
    uint32_t ihash = sh_key(caddr, port, 0);
    int64_t d = state[1 + ihash];
    if (d < 0)
        return -1;
    if (eligible(dest, d))
        return d;
    if (!(state[0] & 1))
        return -1;
    for (uint32_t off = 0; off < 256; off++) {
        d = state[1 + sh_key(caddr, port, (off + ihash) % 256)];
        if (d < 0)
            return -1;
        if (eligible(dest, d))
            return d;
    }
    return -1;
}

static inline uint64_t rol64(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }
#define SIPROUND                                                                          \
    do {                                                                                  \
        v0 += v1; v1 = rol64(v1, 13); v1 ^= v0; v0 = rol64(v0, 32);                      \
        v2 += v3; v3 = rol64(v3, 16); v3 ^= v2;                                           \
        v0 += v3; v3 = rol64(v3, 21); v3 ^= v0;                                           \
        v2 += v1; v1 = rol64(v1, 17); v1 ^= v2; v2 = rol64(v2, 32);                      \
    } while (0)

/* 64-bit kernel hsiphash(&v, 4, {key, key}) = SipHash-1-3, low 32 bits */
static inline uint32_t hsiphash_u32(uint32_t v, uint64_t key)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ key, v1 = 0x646f72616e646f6dULL ^ key;
    uint64_t v2 = 0x6c7967656e657261ULL ^ key, v3 = 0x7465646279746573ULL ^ key;
    uint64_t b = ((uint64_t)4 << 56) | v;
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return (uint32_t)((v0 ^ v1) ^ (v2 ^ v3));
}

enum { MH_FLAGS, MH_M, MH_BITS, MH_K1 };
#define MH_TAB_OFF 8
static inline uint32_t mh_mod(uint32_t h, int64_t m) { return m == MH_TAB_SIZE ? h % MH_TAB_SIZE : (uint32_t)(h % (uint64_t)m); }

static int64_t mh_one(SCHED_ARGS)
{
    int64_t m = state[MH_M];
    uint64_t key = (uint64_t)state[MH_K1];
    uint32_t port = (state[MH_FLAGS] & 2) ? cport : 0;
    uint32_t ihash = mh_mod(hsiphash_u32(port + caddr, key), m);
    int64_t d = state[MH_TAB_OFF + ihash];
    if (d < 0)
        return -1;
    if (eligible(dest, d))
        return d;
    if (!(state[MH_FLAGS] & 1))
        return -1;
    for (int64_t off = 0; off < m; off++) {
        uint32_t roffset = (uint32_t)((off + ihash) % m);
        d = state[MH_TAB_OFF + mh_mod(hsiphash_u32(roffset + port + caddr, key), m)];
        if (d < 0)
            return -1;
        if (eligible(dest, d))
            return d;
    }
    return -1;
}

/* ------------------------------------------------------------------ lblc, lblcr */

enum { H_ECAP, H_ENTRIES, H_EFREE, H_ROVER, H_COUNTER, H_EXPIRE, H_MAXSIZE, H_ELCAP, H_ELFREE };
enum { E_ADDR, E_DEST, E_LASTUSE, E_NEXT, E_SETHEAD, E_SETSIZE, E_LASTMOD, ESTRIDE };
enum { EL_DEST, EL_NEXT, ELSTRIDE };
#define BKT_OFF 16
#define TAB_BITS 10
#define TAB_SIZE (1 << TAB_BITS)
#define EO(en) (BKT_OFF + TAB_SIZE + ESTRIDE * (en))
#define ELO(el) (BKT_OFF + TAB_SIZE + ESTRIDE * state[H_ECAP] + ELSTRIDE * (el))

static int64_t tab_get(int64_t *state, uint32_t addr)
{
    for (int64_t en = state[BKT_OFF + hash_32(addr, TAB_BITS)]; en >= 0; en = state[EO(en) + E_NEXT])
        if (state[EO(en) + E_ADDR] == addr)
            return en;
    return -1;
}

static int64_t tab_alloc(int64_t *state, uint32_t addr, int64_t now)
{
    int64_t en = state[H_EFREE];
    if (en < 0)
        return -1;
    int64_t o = EO(en), b = BKT_OFF + hash_32(addr, TAB_BITS);
    state[H_EFREE] = state[o + E_NEXT];
    state[o + E_ADDR] = addr;
    state[o + E_DEST] = -1;
    state[o + E_LASTUSE] = now;
    state[o + E_SETHEAD] = -1;
    state[o + E_SETSIZE] = 0;
    state[o + E_LASTMOD] = now;
    state[o + E_NEXT] = state[b];
    state[b] = en;
    state[H_ENTRIES]++;
    return en;
}

static void tab_unlink_free(int64_t *state, int64_t en)
{
    int64_t o = EO(en), b = BKT_OFF + hash_32((uint32_t)state[o + E_ADDR], TAB_BITS);
    int64_t prev = -1, cur = state[b];
    while (cur >= 0 && cur != en) {
        prev = cur;
        cur = state[EO(cur) + E_NEXT];
    }
    if (prev < 0)
        state[b] = state[o + E_NEXT];
    else
        state[EO(prev) + E_NEXT] = state[o + E_NEXT];
    for (int64_t el = state[o + E_SETHEAD], nxt; el >= 0; el = nxt) {
        nxt = state[ELO(el) + EL_NEXT];
        state[ELO(el) + EL_NEXT] = state[H_ELFREE];
        state[H_ELFREE] = el;
    }
    state[o + E_SETHEAD] = -1;
    state[o + E_SETSIZE] = 0;
    state[o + E_NEXT] = state[H_EFREE];
    state[H_EFREE] = en;
}

static bool lblc_overloaded(const int64_t *dest, int64_t rows, int64_t d)
{
    if (D(d, ACT) > D(d, W))
        for (int64_t i = 0; i < rows; i++)
            if (in_list(dest, i) && D(i, ACT) * 2 < D(i, W))
                return true;
    return false;
}

static int64_t lblc_one(SCHED_ARGS)
{
    int64_t en = tab_get(state, daddr), d;
    if (en >= 0) {
        state[EO(en) + E_LASTUSE] = now;
        d = state[EO(en) + E_DEST];
        if (in_list(dest, d) && D(d, W) > 0 && !lblc_overloaded(dest, rows, d))
            return d;
    }
    d = wlc_scan(dest, rows);
    if (d < 0)
        return -1;
    if (en >= 0) {
        if (state[EO(en) + E_DEST] == d)
            return d;
        tab_unlink_free(state, en); /* the kernel does not decrement entries here */
    }
    en = tab_alloc(state, daddr, now);
    if (en >= 0)
        state[EO(en) + E_DEST] = d;
    return d;
}

static void set_insert(int64_t *state, int64_t en, int64_t d, bool check, int64_t now)
{
    int64_t o = EO(en), el;
    if (check)
        for (el = state[o + E_SETHEAD]; el >= 0; el = state[ELO(el) + EL_NEXT])
            if (state[ELO(el) + EL_DEST] == d)
                return;
    el = state[H_ELFREE];
    if (el < 0)
        return;
    state[H_ELFREE] = state[ELO(el) + EL_NEXT];
    state[ELO(el) + EL_DEST] = d;
    state[ELO(el) + EL_NEXT] = state[o + E_SETHEAD];
    state[o + E_SETHEAD] = el;
    state[o + E_SETSIZE]++;
    state[o + E_LASTMOD] = now;
}

static void set_erase(int64_t *state, int64_t en, int64_t d, int64_t now)
{
    int64_t o = EO(en), prev = -1;
    for (int64_t el = state[o + E_SETHEAD]; el >= 0; prev = el, el = state[ELO(el) + EL_NEXT]) {
        if (state[ELO(el) + EL_DEST] != d)
            continue;
        state[o + E_SETSIZE]--;
        state[o + E_LASTMOD] = now;
        if (prev < 0)
            state[o + E_SETHEAD] = state[ELO(el) + EL_NEXT];
        else
            state[ELO(prev) + EL_NEXT] = state[ELO(el) + EL_NEXT];
        state[ELO(el) + EL_NEXT] = state[H_ELFREE];
        state[H_ELFREE] = el;
        return;
    }
}

static int64_t set_min(const int64_t *dest, int64_t *state, int64_t en)
{
    int64_t least = -1;
    for (int64_t el = state[EO(en) + E_SETHEAD]; el >= 0; el = state[ELO(el) + EL_NEXT]) {
        int64_t d = state[ELO(el) + EL_DEST];
        if (D(d, FLAGS) & F_OVERLOAD)
            continue;
        if (least < 0) {
            if (D(d, W) > 0 && in_list(dest, d))
                least = d;
        } else if (overhead(dest, least) * D(d, W) > overhead(dest, d) * D(least, W) && in_list(dest, d)) {
            least = d;
        }
    }
    return least;
}

static int64_t set_max(const int64_t *dest, int64_t *state, int64_t en)
{
    int64_t most = -1;
    for (int64_t el = state[EO(en) + E_SETHEAD]; el >= 0; el = state[ELO(el) + EL_NEXT]) {
        int64_t d = state[ELO(el) + EL_DEST];
        if (most < 0) {
            if (D(d, W) > 0)
                most = d;
        } else if (overhead(dest, most) * D(d, W) < overhead(dest, d) * D(most, W) && D(d, W) > 0) {
            most = d;
        }
    }
    return most;
}

static int64_t lblcr_one(SCHED_ARGS)
{
    int64_t en = tab_get(state, daddr), d;
    if (en >= 0) {
        int64_t o = EO(en);
        state[o + E_LASTUSE] = now;
        d = set_min(dest, state, en);
        if (state[o + E_SETSIZE] > 1 && now > state[o + E_LASTMOD] + state[H_EXPIRE]) {
            int64_t m = set_max(dest, state, en);
            if (m >= 0)
                set_erase(state, en, m, now);
        }
        if (d >= 0 && !lblc_overloaded(dest, rows, d))
            return d;
        d = wlc_scan(dest, rows);
        if (d < 0)
            return -1;
        set_insert(state, en, d, true, now);
        return d;
    }
    d = wlc_scan(dest, rows);
    if (d < 0)
        return -1;
    en = tab_alloc(state, daddr, now);
    if (en >= 0)
        set_insert(state, en, d, false, now);
    return d;
}

/* ------------------------------------------------------------------ batch entry points */

#define BATCH(name)                                                                          \
    void pl_sched_##name(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, \
                         const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, \
                         int64_t n, int64_t now, int64_t bind, int64_t *out)                  \
    {                                                                                        \
        (void)dport;                                                                         \
        for (int64_t j = 0; j < n; j++) {                                                    \
            int64_t i = name##_one(dest, rows, state, caddr[j], cport[j], daddr[j], now);    \
            out[j] = i;                                                                      \
            if (bind && i >= 0)                                                              \
                charge(dest, i, bind);                                                       \
        }                                                                                    \
    }

BATCH(rr)
BATCH(wrr)
BATCH(lc)
BATCH(wlc)
BATCH(sed)
BATCH(nq)
BATCH(fo)
BATCH(ovf)
BATCH(dh)
BATCH(sh)
BATCH(mh)
BATCH(lblc)
BATCH(lblcr)
