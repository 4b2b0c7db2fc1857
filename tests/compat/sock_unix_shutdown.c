/* A Unix stream socketpair where one end did shutdown(SHUT_WR) after sending bytes: the other end
 * reads them, then end of stream; the shut end cannot send; the other direction still works.
 * The first check (before the dump) only peeks.
 * compat-object: Unix stream socketpair with shutdown(SHUT_WR)
 */
#include "common.h"

#include <sys/socket.h>

static int sv[2];
static int checks;

static void check(void)
{
	char b[32];
	ssize_t n;
	if (checks == 0) {
		n = recv(sv[1], b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
		if (n != 8) {
			fr_status("BAD nothing queued");
			return;
		}
	} else if (checks == 1) {
		n = recv(sv[1], b, sizeof(b), MSG_DONTWAIT);
		if (n != 8 || memcmp(b, "final-wd", 8)) {
			fr_status("BAD bytes before the shutdown: %zd", n);
			return;
		}
	}
	if (checks >= 1) {
		n = recv(sv[1], b, sizeof(b), MSG_DONTWAIT);
		if (n != 0) {
			fr_status("BAD after the bytes: %zd (%s), want end of stream", n, n < 0 ? strerror(errno) : "data");
			return;
		}
	}
	if (send(sv[0], "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) {
		fr_status("BAD the shut end can still send");
		return;
	}
	if (send(sv[1], "back", 4, 0) != 4 || recv(sv[0], b, sizeof(b), MSG_DONTWAIT) != 4) {
		fr_status("BAD the other direction is broken");
		return;
	}
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || send(sv[0], "final-wd", 8, 0) != 8 || shutdown(sv[0], SHUT_WR))
		fr_die("setup");
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
