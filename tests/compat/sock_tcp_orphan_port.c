/* A TCP listener (no SO_REUSEADDR) whose accepted connection the process closed from the
 * server side while the client end stays open in the process: the closed end lives on without
 * a descriptor (an orphan in FIN-WAIT-2, then TIME-WAIT) on the listener's port, outside the
 * process. After the restore the listener still accepts new connections and the client end
 * still holds the bytes sent before the close, its peer's end of stream behind them.
 * compat-object: TCP listener whose port an orphan of a connection it accepted still holds
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int l, c;
static struct sockaddr_in addr;

static void check(void)
{
	char buf[32];
	/* The client end: the bytes (peeked), and the peer's end of stream (POLLRDHUP). */
	struct pollfd pf = {.fd = c, .events = POLLIN | POLLRDHUP};
	if (poll(&pf, 1, 1000) != 1 || !(pf.revents & POLLRDHUP)) {
		fr_status("BAD client end: no end of stream from its peer (revents %#x)", pf.revents);
		return;
	}
	ssize_t n = recv(c, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	if (n != 6 || memcmp(buf, "server", 6)) {
		fr_status("BAD client end: %zd bytes before end of stream, want \"server\"", n);
		return;
	}
	/* The listener: a new connection is accepted and carries a byte. The client closes
	 * first, so no more orphans are left on the listener's port. */
	int k = socket(AF_INET, SOCK_STREAM, 0);
	if (k < 0 || connect(k, (struct sockaddr *)&addr, sizeof(addr)) || write(k, "k", 1) != 1) {
		fr_status("BAD connect to the listener: %s", strerror(errno));
		if (k >= 0)
			close(k);
		return;
	}
	struct pollfd pl = {.fd = l, .events = POLLIN};
	int s = poll(&pl, 1, 1000) == 1 ? accept(l, NULL, NULL) : -1;
	char one = 0;
	struct pollfd ps = {.fd = s, .events = POLLIN};
	int ok = s >= 0 && poll(&ps, 1, 1000) == 1 && read(s, &one, 1) == 1 && one == 'k';
	close(k);
	if (s >= 0)
		close(s);
	if (!ok) {
		fr_status("BAD the listener does not accept a new connection with its byte");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_INET, SOCK_STREAM, 0);
	addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(addr);
	if (bind(l, (struct sockaddr *)&addr, sizeof(addr)) || listen(l, 8) ||
	    getsockname(l, (struct sockaddr *)&addr, &len))
		fr_die("listen");
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&addr, sizeof(addr)))
		fr_die("connect");
	int a = accept(l, NULL, NULL);
	if (a < 0 || write(a, "server", 6) != 6)
		fr_die("accept");
	/* Closed from the server side: an orphan in FIN-WAIT-2 (the client end acknowledged
	 * the FIN and stays open in CLOSE-WAIT) keeps the listener's port. */
	close(a);
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
