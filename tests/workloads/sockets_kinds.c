/* Socket kinds beyond TCP, UDP and Unix. Usage: sockets_kinds STATEDIR MODE.
 *   netlink: a NETLINK_ROUTE socket bound to a chosen port id, in groups 23 and 36 (one
 *            beyond the first 32), with NETLINK_EXT_ACK on; another bound by the kernel.
 *            SIOGUSR1 checks names and memberships, and that a link dump request is answered
 *            to the chosen port id.
 *   netlink-queued: a NETLINK_ROUTE socket with a reply not read yet (refused at dump).
 *   raw:     a raw ICMP socket bound to 127.0.0.1 with an ICMP_FILTER, and a UDP-Lite socket
 *            bound to 127.0.0.1 with a send checksum coverage; SIGUSR1 pings 127.0.0.1
 *            through the raw socket and reads the echo reply, and sends a UDP-Lite datagram
 *            to the UDP-Lite socket and reads it. A ping (ICMP datagram) socket too, when
 *            net.ipv4.ping_group_range lets the process have one.
 *   packet:  an AF_PACKET socket with a receive ring (refused at dump).
 *   packet-on IFNAME: an AF_PACKET socket bound to interface IFNAME.
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/icmp.h>
#include <linux/if_packet.h>
#include <linux/if_ether.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

unsigned int if_nametoindex(const char *ifname); /* <net/if.h> clashes with <linux/if.h> */

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif
#ifndef SOL_UDPLITE
#define SOL_UDPLITE 136
#endif
#define UDPLITE_SEND_CSCOV 10

static int nl = -1, nl_auto = -1, raw = -1, lite = -1, ping = -1;
static uint32_t nl_port, nl_auto_port;

static uint32_t port_of(int fd)
{
	struct sockaddr_nl a;
	socklen_t len = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &len))
		return 0;
	return a.nl_pid;
}

static int link_dump_answered(char *why, size_t size)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {.h = {.nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 77}};
	req.i.ifi_family = AF_UNSPEC;
	struct sockaddr_nl k = {.nl_family = AF_NETLINK};
	if (sendto(nl, &req, sizeof(req), 0, (struct sockaddr *)&k, sizeof(k)) < 0) {
		snprintf(why, size, "send RTM_GETLINK: %s", strerror(errno));
		return 0;
	}
	char buf[32768];
	for (;;) {
		struct pollfd p = {.fd = nl, .events = POLLIN};
		if (poll(&p, 1, 5000) != 1) {
			snprintf(why, size, "no answer to RTM_GETLINK");
			return 0;
		}
		ssize_t n = recv(nl, buf, sizeof(buf), 0);
		if (n <= 0) {
			snprintf(why, size, "recv: %s", strerror(errno));
			return 0;
		}
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != 77)
				continue; /* a notification */
			if (h->nlmsg_pid != nl_port) {
				snprintf(why, size, "answer to port id %u, want %u", h->nlmsg_pid, nl_port);
				return 0;
			}
			if (h->nlmsg_type == NLMSG_DONE)
				return 1;
		}
	}
}

static int memberships_ok(char *why, size_t size)
{
	uint32_t g[4] = {0};
	socklen_t len = sizeof(g);
	if (getsockopt(nl, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, g, &len)) {
		snprintf(why, size, "NETLINK_LIST_MEMBERSHIPS: %s", strerror(errno));
		return 0;
	}
	if (g[0] != (1u << 22) || g[1] != (1u << 3)) {
		snprintf(why, size, "groups %#x %#x, want %#x %#x", g[0], g[1], 1u << 22, 1u << 3);
		return 0;
	}
	int ext = 0;
	len = sizeof(ext);
	getsockopt(nl, SOL_NETLINK, NETLINK_EXT_ACK, &ext, &len);
	if (!ext) {
		snprintf(why, size, "NETLINK_EXT_ACK is off");
		return 0;
	}
	return 1;
}

static uint16_t csum(const void *data, size_t len)
{
	const uint16_t *p = data;
	uint32_t s = 0;
	for (; len > 1; len -= 2)
		s += *p++;
	if (len)
		s += *(const uint8_t *)p;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static int echo_answered(int fd, int is_raw, char *why, size_t size)
{
	static uint16_t seq;
	struct icmphdr h = {.type = ICMP_ECHO};
	h.un.echo.id = htons(0x4242);
	h.un.echo.sequence = htons(++seq);
	h.checksum = csum(&h, sizeof(h));
	struct sockaddr_in to = {.sin_family = AF_INET};
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (sendto(fd, &h, sizeof(h), 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		snprintf(why, size, "send echo: %s", strerror(errno));
		return 0;
	}
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 5000) != 1) {
			snprintf(why, size, "no echo reply on the %s socket", is_raw ? "raw" : "ping");
			return 0;
		}
		unsigned char buf[256];
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		size_t off = is_raw ? (size_t)(buf[0] & 0xf) * 4 : 0;
		if (n < (ssize_t)(off + sizeof(h)))
			continue;
		struct icmphdr r;
		memcpy(&r, buf + off, sizeof(r));
		if (r.type == ICMP_ECHOREPLY && ntohs(r.un.echo.sequence) == seq)
			return 1;
	}
}

static int lite_answered(char *why, size_t size)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	getsockname(lite, (struct sockaddr *)&a, &len);
	int s = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	int ok = sendto(s, "lite", 4, 0, (struct sockaddr *)&a, sizeof(a)) == 4;
	close(s);
	char buf[16];
	struct pollfd p = {.fd = lite, .events = POLLIN};
	if (!ok || poll(&p, 1, 5000) != 1 || recv(lite, buf, sizeof(buf), 0) != 4 || memcmp(buf, "lite", 4)) {
		snprintf(why, size, "the UDP-Lite socket does not receive");
		return 0;
	}
	int cov = 0;
	len = sizeof(cov);
	getsockopt(lite, SOL_UDPLITE, UDPLITE_SEND_CSCOV, &cov, &len);
	if (cov != 20) {
		snprintf(why, size, "UDPLITE_SEND_CSCOV %d, want 20", cov);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "netlink";
	if (!strcmp(mode, "netlink") || !strcmp(mode, "netlink-queued")) {
		nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
		nl_port = 0x40000000u | (uint32_t)getpid();
		struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_pid = nl_port};
		if (bind(nl, (struct sockaddr *)&a, sizeof(a)))
			fr_die("bind netlink");
		int g = 23, one = 1;
		if (setsockopt(nl, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)))
			fr_die("join 23");
		g = 36;
		if (setsockopt(nl, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)))
			fr_die("join 36");
		setsockopt(nl, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
		nl_auto = socket(AF_NETLINK, SOCK_DGRAM, NETLINK_ROUTE);
		struct sockaddr_nl z = {.nl_family = AF_NETLINK};
		if (bind(nl_auto, (struct sockaddr *)&z, sizeof(z)))
			fr_die("bind netlink auto");
		nl_auto_port = port_of(nl_auto);
		if (!strcmp(mode, "netlink-queued")) {
			struct {
				struct nlmsghdr h;
				struct ifinfomsg i;
			} req = {.h = {.nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1}};
			struct sockaddr_nl k = {.nl_family = AF_NETLINK};
			if (sendto(nl, &req, sizeof(req), 0, (struct sockaddr *)&k, sizeof(k)) < 0)
				fr_die("send");
			usleep(100000); /* the answer waits unread */
		}
	} else if (!strcmp(mode, "raw")) {
		raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (raw < 0 || bind(raw, (struct sockaddr *)&a, sizeof(a)))
			fr_die("raw socket");
		/* deliver echo replies only (bit set = filtered out) */
		struct icmp_filter f = {.data = ~(1u << ICMP_ECHOREPLY)};
		if (setsockopt(raw, SOL_RAW, ICMP_FILTER, &f, sizeof(f)))
			fr_die("ICMP_FILTER");
		lite = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
		int cov = 20;
		if (lite < 0 || bind(lite, (struct sockaddr *)&a, sizeof(a)) ||
		    setsockopt(lite, SOL_UDPLITE, UDPLITE_SEND_CSCOV, &cov, sizeof(cov)))
			fr_die("UDP-Lite socket");
		ping = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP); /* -1 when ping_group_range forbids */
	} else if (!strcmp(mode, "packet-on") && argc > 3) {
		/* A packet socket bound to the interface named by argv[3]. */
		int pk = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
		struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP)};
		a.sll_ifindex = (int)if_nametoindex(argv[3]);
		if (pk < 0 || !a.sll_ifindex || bind(pk, (struct sockaddr *)&a, sizeof(a)))
			fr_die("packet socket on the interface");
	} else if (!strcmp(mode, "packet")) {
		int pk = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_ALL));
		struct tpacket_req req = {.tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048, .tp_frame_nr = 2};
		if (pk < 0 || setsockopt(pk, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
			fr_die("packet socket");
	}
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			char why[256] = "";
			int ok = 1;
			if (nl >= 0) {
				if (port_of(nl) != nl_port) {
					snprintf(why, sizeof(why), "port id %u, want %u", port_of(nl), nl_port);
					ok = 0;
				} else if (port_of(nl_auto) != nl_auto_port) {
					snprintf(why, sizeof(why), "kernel-chosen port id %u, want %u", port_of(nl_auto), nl_auto_port);
					ok = 0;
				} else
					ok = memberships_ok(why, sizeof(why)) && link_dump_answered(why, sizeof(why));
			}
			if (ok && raw >= 0) {
				struct icmp_filter f;
				socklen_t len = sizeof(f);
				if (getsockopt(raw, SOL_RAW, ICMP_FILTER, &f, &len) || f.data != ~(1u << ICMP_ECHOREPLY)) {
					snprintf(why, sizeof(why), "ICMP_FILTER differs");
					ok = 0;
				} else
					ok = echo_answered(raw, 1, why, sizeof(why)) && lite_answered(why, sizeof(why));
				if (ok && ping >= 0)
					ok = echo_answered(ping, 0, why, sizeof(why));
			}
			if (ok)
				fr_status("ok pid=%d ping=%d", (int)getpid(), ping >= 0);
			else
				fr_status("BAD %s", why);
		}
		fr_log_tick(tick++);
		usleep(10000);
	}
}
