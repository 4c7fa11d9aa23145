/* udp_sink: counting UDP receiver for the pylvs forwarding benchmark (copied from ../shared/lab/src).
 *
 *   udp_sink PORT SECONDS
 *
 * Binds 0.0.0.0:PORT, receives with recvmmsg() (batches of 64) and counts
 * datagrams for SECONDS seconds (hard bound), then prints one line:
 *   recv=<datagrams> bytes=<payload bytes>
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: %s PORT SECONDS\n", argv[0]);
		return 2;
	}
	int port = atoi(argv[1]);
	double secs = atof(argv[2]);
	if (secs <= 0 || secs > 3600) {
		fprintf(stderr, "SECONDS must be in 0..3600\n");
		return 2;
	}
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) { perror("socket"); return 1; }
	int one = 1, sz = 32 << 20;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	struct timeval tv = { 0, 100000 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = INADDR_ANY };
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) { perror("bind"); return 1; }

	static char bufs[BATCH][2048];
	struct iovec iov[BATCH];
	struct mmsghdr msgs[BATCH];
	memset(msgs, 0, sizeof(msgs));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	unsigned long long n = 0, bytes = 0;
	double end = now() + secs;
	while (now() < end) {
		int r = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (r <= 0)
			continue; /* timeout (EAGAIN) or EINTR: re-check the deadline */
		n += r;
		for (int i = 0; i < r; i++)
			bytes += msgs[i].msg_len;
	}
	printf("recv=%llu bytes=%llu\n", n, bytes);
	return 0;
}
