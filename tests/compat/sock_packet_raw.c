/* An AF_PACKET SOCK_RAW socket (ETH_P_ALL) bound to lo with options (PACKET_AUXDATA,
 * PACKET_ORIGDEV, PACKET_IGNORE_OUTGOING, PACKET_VERSION, a receive buffer) and a multicast
 * membership on lo added twice: the same binding and options read back, lo still lists the
 * membership's address (/proc/net/dev_mcast), and the socket still sees a UDP datagram sent
 * to 127.0.0.1, once (the outgoing copy ignored), with its auxiliary data.
 * compat-object: raw packet socket with options and a membership
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

static int pk, u;
static int ifindex;
static unsigned char maddr[6];

struct opt {
	int name, value;
	const char *what;
};
static const struct opt opts[] = {
	{PACKET_AUXDATA, 1, "PACKET_AUXDATA"},
	{PACKET_ORIGDEV, 1, "PACKET_ORIGDEV"},
	{PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING"},
	{PACKET_VERSION, TPACKET_V2, "PACKET_VERSION"},
};

/* The users count /proc/net/dev_mcast gives lo for our address, 0 if absent. */
static int mcast_users(void)
{
	char want[16], line[256], name[32], addr[64];
	snprintf(want, sizeof(want), "%02x%02x%02x%02x%02x%02x", maddr[0], maddr[1], maddr[2], maddr[3], maddr[4],
		 maddr[5]);
	FILE *f = fopen("/proc/net/dev_mcast", "r");
	int users = 0, idx, n, global;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%d %31s %d %d %63s", &idx, name, &n, &global, addr) == 5 && idx == ifindex &&
		    !strcmp(addr, want))
			users = n;
	if (f)
		fclose(f);
	return users;
}

static void check(void)
{
	struct sockaddr_ll a;
	socklen_t l = sizeof(a);
	if (getsockname(pk, (struct sockaddr *)&a, &l) || a.sll_ifindex != ifindex ||
	    a.sll_protocol != htons(ETH_P_ALL)) {
		fr_status("BAD bound to ifindex %d proto %x", a.sll_ifindex, ntohs(a.sll_protocol));
		return;
	}
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		int v = -1;
		socklen_t vl = sizeof(v);
		if (getsockopt(pk, SOL_PACKET, opts[i].name, &v, &vl) || v != opts[i].value) {
			fr_status("BAD %s is %d, want %d", opts[i].what, v, opts[i].value);
			return;
		}
	}
	if (mcast_users() < 1) {
		fr_status("BAD lo no longer lists the membership's address");
		return;
	}
	char buf[4096];
	while (recv(pk, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	/* To our own UDP socket: a closed port would answer with an ICMP error quoting it. */
	struct sockaddr_in to;
	socklen_t tl = sizeof(to);
	getsockname(u, (struct sockaddr *)&to, &tl);
	char marker[32];
	snprintf(marker, sizeof(marker), "pktraw-%d", (int)getpid());
	sendto(u, marker, strlen(marker), 0, (struct sockaddr *)&to, sizeof(to));
	int seen = 0, aux = 0;
	double end = fr_now() + 0.5;
	while (fr_now() < end) {
		struct pollfd pf = {.fd = pk, .events = POLLIN};
		if (poll(&pf, 1, 50) != 1)
			continue;
		char cbuf[256];
		struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
		ssize_t n = recvmsg(pk, &mh, 0);
		if (n > 0 && memmem(buf, (size_t)n, marker, strlen(marker))) {
			seen++;
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
				if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA)
					aux = 1;
		}
	}
	while (recv(u, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	if (seen != 1 || !aux) {
		fr_status("BAD the packet socket saw the datagram %d times (want 1), auxdata %d", seen, aux);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ifindex = (int)if_nametoindex("lo");
	pk = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
	u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in ua = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (u < 0 || bind(u, (struct sockaddr *)&ua, sizeof(ua)))
		fr_die("udp socket");
	if (pk < 0 || u < 0)
		fr_die("socket");
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (setsockopt(pk, SOL_PACKET, opts[i].name, &opts[i].value, sizeof(int)))
			fr_die(opts[i].what);
	int rcvbuf = 300000;
	if (setsockopt(pk, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)))
		fr_die("SO_RCVBUF");
	struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL), .sll_ifindex = ifindex};
	if (bind(pk, (struct sockaddr *)&a, sizeof(a)))
		fr_die("bind");
	/* A multicast address of our own (01:00:5e:7f + pid), added twice. */
	int pid = (int)getpid();
	unsigned char m[6] = {0x01, 0x00, 0x5e, 0x7f, (unsigned char)(pid >> 8), (unsigned char)pid};
	memcpy(maddr, m, 6);
	struct packet_mreq mr = {.mr_ifindex = ifindex, .mr_type = PACKET_MR_MULTICAST, .mr_alen = 6};
	memcpy(mr.mr_address, m, 6);
	if (setsockopt(pk, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) ||
	    setsockopt(pk, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)))
		fr_die("PACKET_ADD_MEMBERSHIP");
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
