/* IPv6 TCP listeners on [::]: one on port P with IPV6_V6ONLY (so an IPv4 listener can share P
 * on 127.0.0.1), one dual-stack with it cleared, reached from IPv4 over 127.0.0.1.
 * compat-object: IPv6 sockets with IPV6_V6ONLY
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int v6only, v4, loop6;
static struct sockaddr_in6 a6, l6;

static int try_connect(struct sockaddr_in6 *to, int l)
{
	struct sockaddr_in6 t = *to;
	t.sin6_addr = in6addr_loopback;
	int c = socket(AF_INET6, SOCK_STREAM, 0);
	int ok = !connect(c, (struct sockaddr *)&t, sizeof(t));
	struct pollfd pf = {.fd = l, .events = POLLIN};
	if (ok && poll(&pf, 1, 1000) == 1)
		close(accept(l, NULL, NULL));
	else
		ok = 0;
	close(c);
	return ok;
}

static void check(void)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(v6only, IPPROTO_IPV6, IPV6_V6ONLY, &v, &l);
	int w = -1;
	l = sizeof(w);
	getsockopt(loop6, IPPROTO_IPV6, IPV6_V6ONLY, &w, &l);
	if (v != 1 || w != 0) {
		fr_status("BAD IPV6_V6ONLY %d (want 1) and %d (want 0)", v, w);
		return;
	}
	if (!try_connect(&a6, v6only)) {
		fr_status("BAD connecting over ::1 failed");
		return;
	}
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in t = {.sin_family = AF_INET, .sin_port = l6.sin6_port, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int ok = !connect(c, (struct sockaddr *)&t, sizeof(t));
	struct pollfd pf = {.fd = loop6, .events = POLLIN};
	if (ok && poll(&pf, 1, 1000) == 1)
		close(accept(loop6, NULL, NULL));
	else
		ok = 0;
	close(c);
	if (!ok) {
		fr_status("BAD the dual-stack listener is not reached over IPv4");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	v6only = socket(AF_INET6, SOCK_STREAM, 0);
	loop6 = socket(AF_INET6, SOCK_STREAM, 0);
	v4 = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1, zero = 0;
	setsockopt(v6only, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(loop6, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	a6.sin6_family = l6.sin6_family = AF_INET6;
	a6.sin6_addr = in6addr_any;
	l6.sin6_addr = in6addr_any;
	socklen_t l = sizeof(a6);
	if (bind(v6only, (struct sockaddr *)&a6, sizeof(a6)) || listen(v6only, 4) ||
	    getsockname(v6only, (struct sockaddr *)&a6, &l))
		fr_die("bind v6only");
	struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = a6.sin6_port, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(v4, (struct sockaddr *)&a4, sizeof(a4)) || listen(v4, 4))
		fr_die("bind v4 on the same port");
	l = sizeof(l6);
	if (bind(loop6, (struct sockaddr *)&l6, sizeof(l6)) || listen(loop6, 4) ||
	    getsockname(loop6, (struct sockaddr *)&l6, &l))
		fr_die("bind dual-stack");
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
