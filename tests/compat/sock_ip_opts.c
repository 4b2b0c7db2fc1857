/* IP-level options on a UDP socket: IP_TTL 7, IP_MULTICAST_TTL 3, IP_MULTICAST_LOOP 0,
 * IP_PKTINFO, IP_RECVTOS, IP_FREEBIND, IP_MTU_DISCOVER IP_PMTUDISC_DONT; and IPV6_UNICAST_HOPS 9
 * on an IPv6 UDP socket.
 * compat-object: IP-level socket options (TTL, multicast, pktinfo, freebind, PMTU)
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int u, u6;

static int get(int fd, int lvl, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, lvl, opt, &v, &l))
		return -1000;
	if (l == 1)
		v &= 0xff;
	return v;
}

static void check(void)
{
	char bad[512] = "";
	struct {
		int fd, lvl, opt, want;
		const char *name;
	} o[] = {{u, IPPROTO_IP, IP_TTL, 7, "IP_TTL"},
		 {u, IPPROTO_IP, IP_MULTICAST_TTL, 3, "IP_MULTICAST_TTL"},
		 {u, IPPROTO_IP, IP_MULTICAST_LOOP, 0, "IP_MULTICAST_LOOP"},
		 {u, IPPROTO_IP, IP_PKTINFO, 1, "IP_PKTINFO"},
		 {u, IPPROTO_IP, IP_RECVTOS, 1, "IP_RECVTOS"},
		 {u, IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND"},
		 {u, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT, "IP_MTU_DISCOVER"},
		 {u6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 9, "IPV6_UNICAST_HOPS"}};
	for (size_t i = 0; i < sizeof(o) / sizeof(o[0]); i++) {
		int v = get(o[i].fd, o[i].lvl, o[i].opt);
		if (v != o[i].want)
			snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), " %s=%d(want %d)", o[i].name, v, o[i].want);
	}
	if (bad[0])
		fr_status("BAD%s", bad);
	else
		fr_status("ok");
}

static void set(int fd, int lvl, int opt, int v)
{
	if (setsockopt(fd, lvl, opt, &v, sizeof(v)))
		fr_die("setsockopt");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	u = socket(AF_INET, SOCK_DGRAM, 0);
	u6 = socket(AF_INET6, SOCK_DGRAM, 0);
	set(u, IPPROTO_IP, IP_TTL, 7);
	set(u, IPPROTO_IP, IP_MULTICAST_TTL, 3);
	set(u, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
	set(u, IPPROTO_IP, IP_PKTINFO, 1);
	set(u, IPPROTO_IP, IP_RECVTOS, 1);
	set(u, IPPROTO_IP, IP_FREEBIND, 1);
	set(u, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT);
	set(u6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 9);
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
