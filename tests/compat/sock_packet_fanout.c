/* Two AF_PACKET SOCK_DGRAM sockets (ETH_P_IP) bound to lo in one fanout group (PACKET_FANOUT_HASH
 * with PACKET_FANOUT_FLAG_ROLLOVER and _IGNORE_OUTGOING, group id from the pid): both read back the same group, and
 * a UDP datagram sent to 127.0.0.1 reaches exactly one of them.
 * compat-object: packet sockets in a fanout group
 */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
#endif

static int pk[2], u;
static int want_fanout;

static void check(void)
{
	for (int i = 0; i < 2; i++) {
		int v = -1;
		socklen_t vl = sizeof(v);
		if (getsockopt(pk[i], SOL_PACKET, PACKET_FANOUT, &v, &vl) || v != want_fanout) {
			fr_status("BAD socket %d: PACKET_FANOUT %#x, want %#x", i, v, want_fanout);
			return;
		}
	}
	char buf[2048];
	for (int i = 0; i < 2; i++)
		while (recv(pk[i], buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
	/* To our own UDP socket: a closed port would answer with an ICMP error quoting it. */
	struct sockaddr_in to;
	socklen_t tl = sizeof(to);
	getsockname(u, (struct sockaddr *)&to, &tl);
	char marker[32];
	snprintf(marker, sizeof(marker), "pktfan-%d", (int)getpid());
	sendto(u, marker, strlen(marker), 0, (struct sockaddr *)&to, sizeof(to));
	int seen = 0;
	double end = fr_now() + 0.5;
	while (fr_now() < end) {
		struct pollfd pf[2] = {{.fd = pk[0], .events = POLLIN}, {.fd = pk[1], .events = POLLIN}};
		if (poll(pf, 2, 50) < 1)
			continue;
		for (int i = 0; i < 2; i++) {
			ssize_t n = recv(pk[i], buf, sizeof(buf), MSG_DONTWAIT);
			if (n > 0 && memmem(buf, (size_t)n, marker, strlen(marker)))
				seen++;
		}
	}
	while (recv(u, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	if (seen != 1) {
		fr_status("BAD the group delivered the datagram %d times (want 1)", seen);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int ifindex = (int)if_nametoindex("lo");
	u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (u < 0 || bind(u, (struct sockaddr *)&ua, sizeof(ua)))
		fr_die("udp socket");
	int id = (int)(getpid() & 0xffff);
	int arg = id | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_ROLLOVER | PACKET_FANOUT_FLAG_IGNORE_OUTGOING) << 16);
	for (int i = 0; i < 2; i++) {
		pk[i] = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
		struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = ifindex};
		if (pk[i] < 0 || bind(pk[i], (struct sockaddr *)&a, sizeof(a)))
			fr_die("packet socket");
		if (setsockopt(pk[i], SOL_PACKET, PACKET_FANOUT, &arg, sizeof(arg)))
			fr_die("PACKET_FANOUT");
	}
	socklen_t vl = sizeof(want_fanout);
	if (getsockopt(pk[0], SOL_PACKET, PACKET_FANOUT, &want_fanout, &vl) || !want_fanout)
		fr_die("PACKET_FANOUT read back");
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
