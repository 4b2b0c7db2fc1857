/* A TCP connection whose first end wrote more than the other end's receive window takes and
 * then shut down its sending side: its FIN waits behind bytes never sent (FIN-WAIT-1). After
 * the restore the other end reads every byte in order, then the end of stream; the first end
 * gets to FIN-WAIT-2 once its FIN is acknowledged, and receives an answer.
 * compat-object: TCP FIN-WAIT-1 with the FIN behind bytes never sent
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int a, b;
static size_t total;
static int checks;

static int state_of(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
		return -1;
	return ti.tcpi_state;
}

static unsigned char pattern(size_t i)
{
	return (unsigned char)(i * 7 + i / 251);
}

static void check(void)
{
	if (checks == 0) {
		struct pollfd pf = {.fd = b, .events = POLLIN};
		if (state_of(a) != TCP_FIN_WAIT1)
			fr_status("BAD the first end is in state %d, not FIN-WAIT-1", state_of(a));
		else if (poll(&pf, 1, 0) != 1)
			fr_status("BAD nothing readable on the other end");
		else {
			checks++;
			fr_status("ok (before)");
		}
		return;
	}
	if (checks == 1) {
		static unsigned char buf[65536];
		size_t got = 0;
		for (;;) {
			struct pollfd pf = {.fd = b, .events = POLLIN};
			if (poll(&pf, 1, 2000) != 1) {
				fr_status("BAD %zu of %zu bytes, then nothing", got, total);
				return;
			}
			ssize_t n = read(b, buf, sizeof(buf));
			if (n < 0) {
				fr_status("BAD read: %s", strerror(errno));
				return;
			}
			if (n == 0)
				break;
			for (ssize_t i = 0; i < n; i++)
				if (got + (size_t)i >= total || buf[i] != pattern(got + (size_t)i)) {
					fr_status("BAD byte %zu differs (of %zu)", got + (size_t)i, total);
					return;
				}
			got += (size_t)n;
		}
		if (got != total) {
			fr_status("BAD end of stream after %zu of %zu bytes", got, total);
			return;
		}
	}
	int st = -1;
	for (int i = 0; i < 200 && (st = state_of(a)) != TCP_FIN_WAIT2; i++)
		usleep(10000);
	if (st != TCP_FIN_WAIT2) {
		fr_status("BAD the first end is in state %d after its FIN, not FIN-WAIT-2", st);
		return;
	}
	char r[8];
	struct pollfd pf = {.fd = a, .events = POLLIN};
	if (write(b, "reply", 5) != 5 || poll(&pf, 1, 2000) != 1 || read(a, r, sizeof(r)) != 5) {
		fr_status("BAD the answer does not arrive");
		return;
	}
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int small = 4096;
	setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(s);
	if (bind(l, (struct sockaddr *)&s, sizeof(s)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&s, &len))
		fr_die("listen");
	a = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(a, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	if (connect(a, (struct sockaddr *)&s, sizeof(s)))
		fr_die("connect");
	b = accept(l, NULL, NULL);
	close(l);
	fcntl(a, F_SETFL, O_NONBLOCK);
	unsigned char chunk[512];
	for (;;) {
		for (size_t i = 0; i < sizeof(chunk); i++)
			chunk[i] = pattern(total + i);
		ssize_t n = write(a, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno != EAGAIN)
				fr_die("write");
			usleep(20000);
			n = write(a, chunk, sizeof(chunk));
			if (n < 0)
				break;
		}
		total += (size_t)n;
	}
	if (shutdown(a, SHUT_WR))
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
