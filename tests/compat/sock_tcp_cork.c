/* TCP_CORK on an established connection with a few bytes corked (held back, not sent): after the
 * restore the option is still set; uncorking delivers the bytes to the peer.
 * compat-object: TCP_CORK with corked bytes
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int a, b;
static int checks;

static void check(void)
{
	int v = 0;
	socklen_t l = sizeof(v);
	getsockopt(a, IPPROTO_TCP, TCP_CORK, &v, &l);
	if (v != 1) {
		fr_status("BAD TCP_CORK %d", v);
		return;
	}
	if (checks++ == 0) {
		fr_status("ok corked");
		return;
	}
	int zero = 0;
	setsockopt(a, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
	char buf[16];
	struct pollfd pf = {.fd = b, .events = POLLIN};
	ssize_t n = poll(&pf, 1, 2000) == 1 ? read(b, buf, sizeof(buf)) : -1;
	int one = 1;
	setsockopt(a, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
	if (n != 6 || memcmp(buf, "corked", 6)) {
		fr_status("BAD corked bytes: read %zd", n);
		return;
	}
	if (write(a, "corked", 6) != 6)
		fr_die("write");
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
	int one = 1;
	setsockopt(a, IPPROTO_TCP, TCP_CORK, &one, sizeof(one));
	if (write(a, "corked", 6) != 6)
		fr_die("write");
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
