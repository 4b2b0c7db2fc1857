/* A TCP listener on 127.0.0.1 (port 0) with backlog 5 and SO_REUSEADDR: same port, still
 * listening (SO_ACCEPTCONN), and a client connecting after the restore is accepted and answered.
 * compat-object: TCP listening socket (port, backlog, SO_REUSEADDR)
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int l;
static struct sockaddr_in addr;

static void check(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	int acc = 0, reuse = 0;
	socklen_t ol = sizeof(int);
	getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &ol);
	ol = sizeof(int);
	getsockopt(l, SOL_SOCKET, SO_REUSEADDR, &reuse, &ol);
	if (getsockname(l, (struct sockaddr *)&a, &len) || a.sin_port != addr.sin_port || !acc || !reuse) {
		fr_status("BAD port %d want %d, listening %d, reuseaddr %d", ntohs(a.sin_port), ntohs(addr.sin_port),
			  acc, reuse);
		return;
	}
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&addr, sizeof(addr))) {
		fr_status("BAD connect: %s", strerror(errno));
		close(c);
		return;
	}
	struct pollfd pf = {.fd = l, .events = POLLIN};
	int s = poll(&pf, 1, 2000) == 1 ? accept(l, NULL, NULL) : -1;
	if (s < 0) {
		fr_status("BAD nothing to accept");
		close(c);
		return;
	}
	int ok = write(c, "ping", 4) == 4;
	char b[4];
	ok = ok && read(s, b, 4) == 4 && !memcmp(b, "ping", 4);
	close(s);
	close(c);
	if (!ok) {
		fr_status("BAD data over the accepted connection");
		return;
	}
	fr_status("ok port=%d", ntohs(addr.sin_port));
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(addr);
	if (bind(l, (struct sockaddr *)&addr, sizeof(addr)) || listen(l, 5) ||
	    getsockname(l, (struct sockaddr *)&addr, &len))
		fr_die("listen");
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
