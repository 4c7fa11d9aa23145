/* udp_blast: bounded small-packet UDP generator for the pylvs forwarding benchmark (copied from ../shared/lab/src).
 *
 *   udp_blast DST_IP PORT SECONDS [PAYLOAD=64] [NSOCK=8] [BATCH=64] [MAXPKTS=0]
 *
 * Sends PAYLOAD-byte datagrams with sendmmsg() in batches of BATCH from NSOCK
 * connected sockets (distinct source ports, so a load balancer sees NSOCK
 * flows), round-robin per batch, as fast as possible, for SECONDS seconds
 * (hard bound) or until MAXPKTS datagrams were sent (0 = no count bound,
 * the time bound still applies).  Prints one line:
 *   sent=<pkts> secs=<elapsed> pps=<rate> errors=<failed sendmmsg calls>
 * Each payload starts with a 64-bit sequence number (not checked by the sink).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_BATCH 1024
#define MAX_SOCK 256

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s DST_IP PORT SECONDS [PAYLOAD] [NSOCK] [BATCH] [MAXPKTS]\n", argv[0]);
		return 2;
	}
	const char *dst = argv[1];
	int port = atoi(argv[2]);
	double secs = atof(argv[3]);
	int payload = argc > 4 ? atoi(argv[4]) : 64;
	int nsock = argc > 5 ? atoi(argv[5]) : 8;
	int batch = argc > 6 ? atoi(argv[6]) : 64;
	unsigned long long maxpkts = argc > 7 ? strtoull(argv[7], NULL, 10) : 0;

	if (secs <= 0 || secs > 3600 || payload < 8 || payload > 1472 || nsock < 1 ||
	    nsock > MAX_SOCK || batch < 1 || batch > MAX_BATCH) {
		fprintf(stderr, "bad arguments (SECONDS 0..3600, PAYLOAD 8..1472, NSOCK 1..%d, BATCH 1..%d)\n",
			MAX_SOCK, MAX_BATCH);
		return 2;
	}

	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, dst, &sa.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", dst);
		return 2;
	}

	int fds[MAX_SOCK];
	for (int i = 0; i < nsock; i++) {
		fds[i] = socket(AF_INET, SOCK_DGRAM, 0);
		if (fds[i] < 0) { perror("socket"); return 1; }
		int sz = 4 << 20;
		setsockopt(fds[i], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
		if (connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0) { perror("connect"); return 1; }
	}

	static char bufs[MAX_BATCH][1472];
	static struct iovec iov[MAX_BATCH];
	static struct mmsghdr msgs[MAX_BATCH];
	memset(bufs, 0xab, sizeof(bufs));
	for (int i = 0; i < batch; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = payload;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	unsigned long long sent = 0, errors = 0, seq = 0;
	double t0 = now(), end = t0 + secs, t = t0;
	int s = 0;
	while (t < end && (maxpkts == 0 || sent < maxpkts)) {
		for (int i = 0; i < batch; i++)
			memcpy(bufs[i], &(unsigned long long){ seq++ }, 8);
		int r = sendmmsg(fds[s], msgs, batch, 0);
		if (r > 0)
			sent += r;
		else
			errors++;
		s = (s + 1) % nsock;
		t = now();
	}
	double el = now() - t0;
	printf("sent=%llu secs=%.3f pps=%.0f errors=%llu\n", sent, el, sent / el, errors);
	return 0;
}
