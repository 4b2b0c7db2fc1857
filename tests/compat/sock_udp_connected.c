/* Two UDP sockets connected to each other over 127.0.0.1: addresses and peers, send/recv both
 * ways, and a datagram from a third socket is filtered out by the connection.
 * compat-object: connected UDP sockets
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int a, b, c;
static struct sockaddr_in aa, ba;

static void check(void)
{
	struct sockaddr_in p;
	socklen_t l = sizeof(p);
	if (getpeername(a, (struct sockaddr *)&p, &l) || p.sin_port != ba.sin_port) {
		fr_status("BAD a's peer lost");
		return;
	}
	if (sendto(c, "stranger", 8, 0, (struct sockaddr *)&aa, sizeof(aa)) != 8 || send(b, "b2a", 3, 0) != 3 ||
	    send(a, "a2b", 3, 0) != 3) {
		fr_status("BAD send: %s", strerror(errno));
		return;
	}
	usleep(20000);
	char buf[16];
	ssize_t n = recv(a, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != 3 || memcmp(buf, "b2a", 3)) {
		fr_status("BAD a received %zd bytes (a stranger's datagram passed the connection?)", n);
		return;
	}
	if (recv(a, buf, sizeof(buf), MSG_DONTWAIT) != -1) {
		fr_status("BAD a received a second datagram");
		return;
	}
	n = recv(b, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != 3 || memcmp(buf, "a2b", 3)) {
		fr_status("BAD b received %zd", n);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	a = socket(AF_INET, SOCK_DGRAM, 0);
	b = socket(AF_INET, SOCK_DGRAM, 0);
	c = socket(AF_INET, SOCK_DGRAM, 0);
	aa.sin_family = ba.sin_family = AF_INET;
	aa.sin_addr.s_addr = ba.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof(aa);
	if (bind(a, (struct sockaddr *)&aa, sizeof(aa)) || getsockname(a, (struct sockaddr *)&aa, &l))
		fr_die("bind");
	l = sizeof(ba);
	if (bind(b, (struct sockaddr *)&ba, sizeof(ba)) || getsockname(b, (struct sockaddr *)&ba, &l))
		fr_die("bind");
	if (connect(a, (struct sockaddr *)&ba, sizeof(ba)) || connect(b, (struct sockaddr *)&aa, sizeof(aa)))
		fr_die("connect");
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
