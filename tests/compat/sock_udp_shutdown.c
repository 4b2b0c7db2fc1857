/* A connected UDP socket after shutdown(SHUT_RD): poll shows POLLRDHUP and a blocking recv returns 0 at once, and sending
 * still works.
 * compat-object: UDP socket shutdown state
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int a, b;
static struct sockaddr_in ba;

static void check(void)
{
	char buf[8];
	struct pollfd pf = {.fd = a, .events = POLLIN | POLLRDHUP};
	if (poll(&pf, 1, 0) != 1 || !(pf.revents & POLLRDHUP)) {
		fr_status("BAD poll does not show the read side shut (revents %x)", pf.revents);
		return;
	}
	ssize_t n = recv(a, buf, sizeof(buf), 0);
	if (n != 0) {
		fr_status("BAD recv on the SHUT_RD socket gave %zd (%s), want 0", n, n < 0 ? strerror(errno) : "data");
		return;
	}
	if (send(a, "x", 1, 0) != 1) {
		fr_status("BAD send: %s", strerror(errno));
		return;
	}
	usleep(10000);
	if (recv(b, buf, sizeof(buf), MSG_DONTWAIT) != 1) {
		fr_status("BAD nothing arrived");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	a = socket(AF_INET, SOCK_DGRAM, 0);
	b = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in aa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	ba = aa;
	socklen_t l = sizeof(ba);
	if (bind(a, (struct sockaddr *)&aa, sizeof(aa)) || bind(b, (struct sockaddr *)&ba, sizeof(ba)) ||
	    getsockname(b, (struct sockaddr *)&ba, &l))
		fr_die("bind");
	struct timeval tv = {2, 0};
	setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(a, (struct sockaddr *)&ba, sizeof(ba)) || shutdown(a, SHUT_RD))
		fr_die("shutdown");
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
