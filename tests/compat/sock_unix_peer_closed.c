/* A Unix stream socket whose peer was closed after sending: the queued bytes, then end of
 * stream; writing gives EPIPE. A seqpacket one likewise (records, then 0).
 * The first check (before the dump) only peeks.
 * compat-object: Unix stream and seqpacket sockets whose peer closed, with queued data
 */
#include "common.h"

#include <sys/socket.h>

static int st, sq;
static int checks;

static void check(void)
{
	char b[32];
	if (checks == 0) {
		if (recv(st, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT) != 11 || recv(sq, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT) != 4) {
			fr_status("BAD nothing queued");
			return;
		}
		checks++;
		fr_status("ok peeked");
		return;
	}
	if (checks == 1) {
		ssize_t n = recv(st, b, sizeof(b), MSG_DONTWAIT);
		if (n != 11 || memcmp(b, "parting-gif", 11)) {
			fr_status("BAD stream bytes: %zd", n);
			return;
		}
		if (recv(sq, b, sizeof(b), MSG_DONTWAIT) != 4 || recv(sq, b, sizeof(b), MSG_DONTWAIT) != 6) {
			fr_status("BAD seqpacket records");
			return;
		}
	}
	ssize_t a = recv(st, b, sizeof(b), MSG_DONTWAIT), c = recv(sq, b, sizeof(b), MSG_DONTWAIT);
	if (a != 0 || c != 0) {
		fr_status("BAD end of stream: stream %zd seqpacket %zd (%s)", a, c, strerror(errno));
		return;
	}
	if (send(st, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) {
		fr_status("BAD writing to a closed peer did not give EPIPE (%s)", strerror(errno));
		return;
	}
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int s1[2], s2[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, s1) || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, s2))
		fr_die("socketpair");
	if (send(s1[1], "parting-gif", 11, 0) != 11 || send(s2[1], "rec1", 4, 0) != 4 || send(s2[1], "record", 6, 0) != 6)
		fr_die("send");
	close(s1[1]);
	close(s2[1]);
	st = s1[0];
	sq = s2[0];
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
