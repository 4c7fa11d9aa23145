/* The kernel's IPVS schedulers as plain linear C (net/netfilter/ipvs/ip_vs_*.c),
 * over the same arrays as pylvs.sched: dest is int64[rows][10] (W ACT INACT FLAGS
 * UTHR LTHR LASTW ADDR PORT FWD; FWD is never read here), state is the
 * algorithm's int64 state array built by pylvs.sched.<name>.new_state.
 * Used as the benchmark's C anchor.
 * Each call makes n decisions; bind: 0 decide only, 1 charge a new inactive
 * connection to each chosen dest, 2 the same counted active.  out[i] = row or -1. */
#ifndef PYLVS_SCHED_LINEAR_H
#define PYLVS_SCHED_LINEAR_H
#include <stdint.h>

void pl_sched_rr(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_wrr(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_lc(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_wlc(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_sed(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_nq(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_fo(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_ovf(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_dh(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_sh(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_mh(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_lblc(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);
void pl_sched_lblcr(int64_t *dest, int64_t rows, int64_t *state, const uint32_t *caddr, const uint16_t *cport, const uint32_t *daddr, const uint16_t *dport, int64_t n, int64_t now, int64_t bind, int64_t *out);

#endif
