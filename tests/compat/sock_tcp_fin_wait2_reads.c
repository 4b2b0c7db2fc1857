/* A TCP connection whose first end shut down its sending side (FIN-WAIT-2) and whose other end
 * already read the end of stream (CLOSE-WAIT) and answered with bytes the first end has not
 * read: after the restore the states are the same (TCP_INFO), the second end reads the end of
 * stream again and can still send, the first end reads what was queued and what comes next,
 * and writing on it fails with EPIPE.
 * compat-object: TCP FIN-WAIT-2 end receiving, CLOSE-WAIT end after the end of stream
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int a, b;
static struct sockaddr_in an, bn;
static int checks;

static int state_of(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
		return -1;
	return ti.tcpi_state;
}

static int expect(int fd, const char *want)
{
	char buf[64];
	size_t got = 0, n = strlen(want);
	while (got < n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 2000) != 1)
			return 0;
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			return 0;
		got += (size_t)r;
	}
	return !memcmp(buf, want, n);
}

static int same_names(void)
{
	struct sockaddr_in x, y;
	socklen_t lx = sizeof(x), ly = sizeof(y);
	return !getsockname(a, (struct sockaddr *)&x, &lx) && !getpeername(b, (struct sockaddr *)&y, &ly) &&
	       !memcmp(&x, &an, sizeof(x)) && !memcmp(&y, &an, sizeof(y)) &&
	       !getsockname(b, (struct sockaddr *)&x, &lx) && !memcmp(&x, &bn, sizeof(x));
}

static void check(void)
{
	char c;
	if (state_of(a) != TCP_FIN_WAIT2 || state_of(b) != TCP_CLOSE_WAIT) {
		fr_status("BAD states %d and %d, not FIN-WAIT-2 (%d) and CLOSE-WAIT (%d)", state_of(a), state_of(b),
			  TCP_FIN_WAIT2, TCP_CLOSE_WAIT);
		return;
	}
	if (!same_names()) {
		fr_status("BAD addresses differ");
		return;
	}
	ssize_t n = recv(b, &c, 1, MSG_DONTWAIT);
	if (n != 0) {
		fr_status("BAD the CLOSE-WAIT end reads %zd (%s), not the end of stream", n, n < 0 ? strerror(errno) : "data");
		return;
	}
	if (checks == 0) {
		char buf[16];
		n = recv(a, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
		if (n != 8 || memcmp(buf, "answer-1", 8)) {
			fr_status("BAD nothing queued on the FIN-WAIT-2 end (%zd)", n);
			return;
		}
		checks++;
		fr_status("ok (before)");
		return;
	}
	if (checks == 1 && !expect(a, "answer-1")) {
		fr_status("BAD the queued answer is not read on the FIN-WAIT-2 end");
		return;
	}
	if (write(b, "answer-2", 8) != 8 || !expect(a, "answer-2")) {
		fr_status("BAD a new answer does not reach the FIN-WAIT-2 end");
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
	len = sizeof(an);
	getsockname(a, (struct sockaddr *)&an, &len);
	len = sizeof(bn);
	getsockname(b, (struct sockaddr *)&bn, &len);
	if (shutdown(a, SHUT_WR))
		fr_die("shutdown");
	char c;
	struct pollfd pf = {.fd = b, .events = POLLIN};
	if (poll(&pf, 1, 2000) != 1 || read(b, &c, 1) != 0)
		fr_die("end of stream");
	if (write(b, "answer-1", 8) != 8)
		fr_die("answer");
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
