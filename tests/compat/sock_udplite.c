/* UDP-Lite sockets (IPPROTO_UDPLITE) with send and receive checksum coverage 20/20: the protocol,
 * the coverage options and the bound port, and a datagram between the two.
 * compat-object: UDP-Lite socket with checksum coverage
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifndef UDPLITE_SEND_CSCOV
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11
#endif

static int a, b;
static struct sockaddr_in ba;

static void check(void)
{
	int proto = 0, sc = 0, rc = 0;
	socklen_t l = sizeof(int);
	getsockopt(a, SOL_SOCKET, SO_PROTOCOL, &proto, &l);
	l = sizeof(int);
	getsockopt(a, IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, &sc, &l);
	l = sizeof(int);
	getsockopt(b, IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, &rc, &l);
	if (proto != IPPROTO_UDPLITE || sc != 20 || rc != 20) {
		fr_status("BAD protocol %d send cscov %d recv cscov %d", proto, sc, rc);
		return;
	}
	if (sendto(a, "lite", 4, 0, (struct sockaddr *)&ba, sizeof(ba)) != 4) {
		fr_status("BAD sendto: %s", strerror(errno));
		return;
	}
	usleep(20000);
	char buf[8];
	if (recv(b, buf, sizeof(buf), MSG_DONTWAIT) != 4) {
		fr_status("BAD nothing received");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	a = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	b = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	int cov = 20;
	if (a < 0 || b < 0 || setsockopt(a, IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, &cov, sizeof(cov)) ||
	    setsockopt(b, IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, &cov, sizeof(cov)))
		fr_die("udplite");
	ba.sin_family = AF_INET;
	ba.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof(ba);
	if (bind(b, (struct sockaddr *)&ba, sizeof(ba)) || getsockname(b, (struct sockaddr *)&ba, &l))
		fr_die("bind");
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
