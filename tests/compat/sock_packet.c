/* An AF_PACKET (SOCK_DGRAM, ETH_P_IP) socket bound to lo: same interface and protocol, and it
 * still sees an IPv4 UDP datagram sent to 127.0.0.1.
 * compat-object: packet socket bound to an interface
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int pk, u;
static int ifindex;

static void check(void)
{
	struct sockaddr_ll a;
	socklen_t l = sizeof(a);
	if (getsockname(pk, (struct sockaddr *)&a, &l) || a.sll_ifindex != ifindex ||
	    a.sll_protocol != htons(ETH_P_IP)) {
		fr_status("BAD bound to ifindex %d proto %x", a.sll_ifindex, ntohs(a.sll_protocol));
		return;
	}
	char buf[2048];
	while (recv(pk, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	char marker[32];
	snprintf(marker, sizeof(marker), "pkt-%d", (int)getpid());
	sendto(u, marker, strlen(marker), 0, (struct sockaddr *)&to, sizeof(to));
	int seen = 0;
	double end = fr_now() + 1.0;
	while (!seen && fr_now() < end) {
		struct pollfd pf = {.fd = pk, .events = POLLIN};
		if (poll(&pf, 1, 100) != 1)
			continue;
		ssize_t n = recv(pk, buf, sizeof(buf), 0);
		if (n > 28 && (size_t)n >= 28 + strlen(marker) && !memcmp(buf + 28, marker, strlen(marker)))
			seen = 1;
	}
	if (!seen) {
		fr_status("BAD the packet socket did not see the datagram");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ifindex = (int)if_nametoindex("lo");
	pk = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = ifindex};
	if (pk < 0 || bind(pk, (struct sockaddr *)&a, sizeof(a)))
		fr_die("packet");
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
