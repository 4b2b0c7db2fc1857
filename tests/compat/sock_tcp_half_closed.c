/* A TCP connection where one end called shutdown(SHUT_WR): the other end (CLOSE-WAIT) reads the
 * bytes sent before, then end of stream, and can still send back; the first (FIN-WAIT-2) can
 * still receive, and writing on it fails with EPIPE.
 * compat-object: TCP half-closed connection (FIN-WAIT-2 / CLOSE-WAIT)
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int a, b;
static int checks;

static void check(void)
{
	char buf[32];
	if (checks == 0) {
		struct pollfd pf = {.fd = b, .events = POLLIN};
		if (poll(&pf, 1, 0) != 1) {
			fr_status("BAD nothing readable on the CLOSE-WAIT end");
			return;
		}
		checks++;
		fr_status("ok (before)");
		return;
	}
	if (checks == 1) {
		ssize_t n = read(b, buf, sizeof(buf));
		if (n != 9 || memcmp(buf, "goodbye!!", 9)) {
			fr_status("BAD bytes before the FIN: %zd", n);
			return;
		}
	}
	ssize_t n = read(b, buf, sizeof(buf));
	if (n != 0) {
		fr_status("BAD no end of stream after the data (%zd: %s)", n, n < 0 ? strerror(errno) : "data");
		return;
	}
	if (write(b, "reply", 5) != 5) {
		fr_status("BAD the CLOSE-WAIT end cannot send: %s", strerror(errno));
		return;
	}
	struct pollfd pf = {.fd = a, .events = POLLIN};
	if (poll(&pf, 1, 2000) != 1 || read(a, buf, sizeof(buf)) != 5) {
		fr_status("BAD the FIN-WAIT-2 end does not receive");
		return;
	}
	if (send(a, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) {
		fr_status("BAD writing after shutdown(SHUT_WR) did not fail with EPIPE");
		return;
	}
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(s);
	if (bind(l, (struct sockaddr *)&s, sizeof(s)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&s, &len))
		fr_die("listen");
	a = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(a, (struct sockaddr *)&s, sizeof(s)))
		fr_die("connect");
	b = accept(l, NULL, NULL);
	close(l);
	if (write(a, "goodbye!!", 9) != 9 || shutdown(a, SHUT_WR))
		fr_die("shutdown");
	usleep(50000);
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
