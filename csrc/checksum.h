/* Internet checksums for the rewrite code: IPv4 header, TCP and UDP (full),
 * and the incremental update of RFC 1624 (eqn. 3).  All 16-bit values are
 * returned in host order and are meant to be stored big-endian in the header.
 * Offsets and lengths are trusted: callers validate the packet first.
 *
 * pl_csum_l4_complete  compute the TCP/UDP checksum of an unfragmented packet in full
 *                      (CHECKSUM_PARTIAL left only the pseudo-header sum in it): 1 if
 *                      written, 0 if not a packet to fix.
 * pl_csum_l4_partial   1 if the packet's TCP/UDP checksum field holds just that
 *                      pseudo-header sum (a frame that lost its CHECKSUM_PARTIAL mark,
 *                      as AF_XDP copies do): completing it is then always right.
 * pl_csum_l4_valid     1 if the TCP/UDP checksum verifies (UDP without one does).
 * pl_csum_tcp_gather   the TCP checksum of a segment whose header and payload lie apart. */
#ifndef PYLVS_CHECKSUM_H
#define PYLVS_CHECKSUM_H
#include <stddef.h>
#include <stdint.h>

uint16_t pl_csum_ipv4_header(const uint8_t *ip, size_t header_len);
uint16_t pl_csum_l4(const uint8_t *ip, size_t packet_len);
uint16_t pl_csum_pseudo(const uint8_t *ip, size_t l4_len);
uint16_t pl_csum(const uint8_t *p, size_t n);
uint16_t pl_csum_tcp_gather(const uint8_t *ip, const uint8_t *th, size_t thl, const uint8_t *payload, size_t plen);
uint16_t pl_csum_update16(uint16_t check, uint16_t old_value, uint16_t new_value);
uint16_t pl_csum_update32(uint16_t check, uint32_t old_value, uint32_t new_value);
int pl_ipv4_fix_checksums(uint8_t *ip, size_t packet_len);
int pl_csum_l4_complete(uint8_t *ip, size_t len);
int pl_csum_l4_partial(const uint8_t *ip, size_t len);
int pl_csum_l4_valid(const uint8_t *ip, size_t len);

#endif
