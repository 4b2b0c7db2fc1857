/* Socket options and filters that must come back exactly. Usage: sockets_opts STATEDIR MODE.
 *   opts:   a TCP listener, an established TCP connection inside the process (both ends), a
 *           UDP socket, an IPv6 UDP socket and a Unix datagram socket, each with options set
 *           away from their defaults (SO_REUSEADDR on the connection among them). Every value
 *           is read back once set; SIGUSR1 compares them all again ("ok n=N" or "BAD which
 *           was -> is") and checks that the connection still carries bytes both ways.
 *   filter: a UDP socket with a classic BPF filter that accepts only datagrams starting with
 *           'y', and an established TCP connection with a filter too (SO_GET_FILTER compared,
 *           and the UDP filter seen working on datagrams the victim sends itself).
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

struct want {
	const char *what;
	int fd, level, name;
	unsigned char val[32];
	socklen_t len;
};
static struct want wants[64];
static int nwants;

/* Sets an int option and remembers what the kernel reports back. */
static void set_int(const char *what, int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof(v)))
		fr_die(what);
	struct want *w = &wants[nwants++];
	w->what = what;
	w->fd = fd;
	w->level = level;
	w->name = name;
	w->len = sizeof(w->val);
	if (getsockopt(fd, level, name, w->val, &w->len))
		fr_die(what);
}

static void set_raw(const char *what, int fd, int level, int name, const void *v, socklen_t len)
{
	if (setsockopt(fd, level, name, v, len))
		fr_die(what);
	struct want *w = &wants[nwants++];
	w->what = what;
	w->fd = fd;
	w->level = level;
	w->name = name;
	w->len = sizeof(w->val);
	if (getsockopt(fd, level, name, w->val, &w->len))
		fr_die(what);
}

/* The first difference, or NULL. */
static const char *compare(char *buf, size_t size)
{
	for (int i = 0; i < nwants; i++) {
		struct want *w = &wants[i];
		unsigned char now[32];
		socklen_t len = sizeof(now);
		if (getsockopt(w->fd, w->level, w->name, now, &len)) {
			snprintf(buf, size, "%s unreadable: %s", w->what, strerror(errno));
			return buf;
		}
		if (len != w->len || memcmp(now, w->val, len)) {
			int was = 0, is = 0;
			memcpy(&was, w->val, w->len < 4 ? w->len : 4);
			memcpy(&is, now, len < 4 ? len : 4);
			snprintf(buf, size, "%s was %d is %d (len %u -> %u)", w->what, was, is, (unsigned)w->len,
				 (unsigned)len);
			return buf;
		}
	}
	return NULL;
}

static int tcp_pair(int *client, int *accepted, int *listener)
{
	int l = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4))
		fr_die("listen");
	socklen_t len = sizeof(a);
	getsockname(l, (struct sockaddr *)&a, &len);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		fr_die("connect");
	int s = accept(l, NULL, NULL);
	if (s < 0)
		fr_die("accept");
	*client = c;
	*accepted = s;
	*listener = l;
	return 0;
}

/* One byte each way over the connection. */
static int carries(int c, int s)
{
	char x = 'q', y = 0;
	if (write(c, &x, 1) != 1)
		return 0;
	struct pollfd p = {.fd = s, .events = POLLIN};
	if (poll(&p, 1, 5000) != 1 || read(s, &y, 1) != 1 || y != 'q')
		return 0;
	if (write(s, "r", 1) != 1)
		return 0;
	p.fd = c;
	if (poll(&p, 1, 5000) != 1 || read(c, &y, 1) != 1 || y != 'r')
		return 0;
	return 1;
}

static int udp_filtered = -1, udp_sender = -1;
static struct sockaddr_in udp_addr;
static struct sock_filter accept_y[] = {
	/* ldb [8] (the first payload byte after the UDP header); ret #-1 if 'y', else ret #0 */
	{0x30, 0, 0, 8},
	{0x15, 0, 1, 'y'},
	{0x06, 0, 0, 0xffffffff},
	{0x06, 0, 0, 0},
};
static struct sock_filter tcp_all[] = {{0x06, 0, 0, 0x40000}};

/* The filter passes 'y…' and drops 'n…'. */
static int filter_works(void)
{
	sendto(udp_sender, "nope", 4, 0, (struct sockaddr *)&udp_addr, sizeof(udp_addr));
	sendto(udp_sender, "yes", 3, 0, (struct sockaddr *)&udp_addr, sizeof(udp_addr));
	char buf[16];
	struct pollfd p = {.fd = udp_filtered, .events = POLLIN};
	if (poll(&p, 1, 5000) != 1)
		return 0;
	ssize_t n = recv(udp_filtered, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != 3 || memcmp(buf, "yes", 3))
		return 0;
	/* nothing else queued */
	return recv(udp_filtered, buf, sizeof(buf), MSG_DONTWAIT) < 0;
}

static int filter_is(int fd, struct sock_filter *f, unsigned n)
{
	struct sock_filter got[16];
	socklen_t len = 16; /* counted in instructions for SO_GET_FILTER */
	if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, got, &len))
		return 0;
	return len == n && !memcmp(got, f, n * sizeof(*f));
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "opts";
	int c, s, l;
	tcp_pair(&c, &s, &l);
	if (!strcmp(mode, "opts")) {
		set_int("listener SO_REUSEPORT", l, SOL_SOCKET, SO_REUSEPORT, 1);
		set_int("listener TCP_DEFER_ACCEPT", l, IPPROTO_TCP, TCP_DEFER_ACCEPT, 3);
		set_int("listener TCP_FASTOPEN", l, IPPROTO_TCP, TCP_FASTOPEN, 5);
		set_int("tcp SO_REUSEADDR", c, SOL_SOCKET, SO_REUSEADDR, 1);
		set_int("tcp SO_KEEPALIVE", c, SOL_SOCKET, SO_KEEPALIVE, 1);
		set_int("tcp TCP_KEEPIDLE", c, IPPROTO_TCP, TCP_KEEPIDLE, 77);
		set_int("tcp TCP_KEEPINTVL", c, IPPROTO_TCP, TCP_KEEPINTVL, 11);
		set_int("tcp TCP_KEEPCNT", c, IPPROTO_TCP, TCP_KEEPCNT, 4);
		set_int("tcp TCP_NODELAY", c, IPPROTO_TCP, TCP_NODELAY, 1);
		set_int("tcp TCP_USER_TIMEOUT", c, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345);
		set_int("tcp TCP_NOTSENT_LOWAT", c, IPPROTO_TCP, TCP_NOTSENT_LOWAT, 40000);
		struct linger lg = {1, 5};
		set_raw("tcp SO_LINGER", c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		set_int("tcp IP_TOS", c, IPPROTO_IP, IP_TOS, 0x10);
		set_int("tcp SO_PRIORITY", c, SOL_SOCKET, SO_PRIORITY, 3);
		set_int("tcp SO_MARK", c, SOL_SOCKET, SO_MARK, 42);
		set_int("tcp SO_RCVLOWAT", c, SOL_SOCKET, SO_RCVLOWAT, 1);
		set_int("tcp SO_OOBINLINE", c, SOL_SOCKET, SO_OOBINLINE, 1);
		set_int("tcp IP_TTL", c, IPPROTO_IP, IP_TTL, 33);
		set_int("tcp SO_SNDBUF", c, SOL_SOCKET, SO_SNDBUF, 70000);
		set_int("tcp SO_BUF_LOCK", c, SOL_SOCKET, SO_BUF_LOCK, 1);
		set_int("accepted SO_REUSEADDR", s, SOL_SOCKET, SO_REUSEADDR, 1);
		set_int("accepted SO_RCVBUF", s, SOL_SOCKET, SO_RCVBUF, 90000);
		set_raw("accepted SO_BINDTODEVICE", s, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3);

		int u = socket(AF_INET, SOCK_DGRAM, 0);
		set_int("udp SO_REUSEADDR", u, SOL_SOCKET, SO_REUSEADDR, 1);
		set_int("udp SO_REUSEPORT", u, SOL_SOCKET, SO_REUSEPORT, 1);
		set_int("udp SO_BROADCAST", u, SOL_SOCKET, SO_BROADCAST, 1);
		set_raw("udp SO_BINDTODEVICE", u, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3);
		set_int("udp IP_RECVERR", u, IPPROTO_IP, IP_RECVERR, 1);
		set_int("udp IP_PKTINFO", u, IPPROTO_IP, IP_PKTINFO, 1);
		set_int("udp IP_FREEBIND", u, IPPROTO_IP, IP_FREEBIND, 1);
		set_int("udp IP_TRANSPARENT", u, IPPROTO_IP, IP_TRANSPARENT, 1);
		set_int("udp IP_MULTICAST_TTL", u, IPPROTO_IP, IP_MULTICAST_TTL, 5);
		set_int("udp IP_MULTICAST_LOOP", u, IPPROTO_IP, IP_MULTICAST_LOOP, 0);
		set_int("udp SO_RCVBUF", u, SOL_SOCKET, SO_RCVBUF, 50000);
		set_int("udp SO_BUF_LOCK", u, SOL_SOCKET, SO_BUF_LOCK, 2);
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(u, (struct sockaddr *)&a, sizeof(a)))
			fr_die("bind udp");

		int v6 = socket(AF_INET6, SOCK_DGRAM, 0);
		set_int("udp6 IPV6_V6ONLY", v6, IPPROTO_IPV6, IPV6_V6ONLY, 1);
		set_int("udp6 IPV6_UNICAST_HOPS", v6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 7);
		set_int("udp6 IPV6_TCLASS", v6, IPPROTO_IPV6, IPV6_TCLASS, 0x20);
		set_int("udp6 IPV6_RECVERR", v6, IPPROTO_IPV6, IPV6_RECVERR, 1);
		set_int("udp6 IPV6_RECVPKTINFO", v6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1);
		set_int("udp6 IPV6_MULTICAST_HOPS", v6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 3);
		set_int("udp6 IPV6_MULTICAST_LOOP", v6, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, 0);

		int ux = socket(AF_UNIX, SOCK_DGRAM, 0);
		set_int("unix SO_PASSCRED", ux, SOL_SOCKET, SO_PASSCRED, 1);
		set_int("unix SO_SNDBUF", ux, SOL_SOCKET, SO_SNDBUF, 30000);
		struct timeval tv = {3, 500000};
		set_raw("unix SO_RCVTIMEO", ux, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	} else if (!strcmp(mode, "filter")) {
		udp_filtered = socket(AF_INET, SOCK_DGRAM, 0);
		udp_sender = socket(AF_INET, SOCK_DGRAM, 0);
		udp_addr.sin_family = AF_INET;
		udp_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(udp_addr);
		if (bind(udp_filtered, (struct sockaddr *)&udp_addr, sizeof(udp_addr)))
			fr_die("bind");
		getsockname(udp_filtered, (struct sockaddr *)&udp_addr, &len);
		struct sock_fprog f = {4, accept_y};
		if (setsockopt(udp_filtered, SOL_SOCKET, SO_ATTACH_FILTER, &f, sizeof(f)))
			fr_die("SO_ATTACH_FILTER");
		struct sock_fprog t = {1, tcp_all};
		if (setsockopt(s, SOL_SOCKET, SO_ATTACH_FILTER, &t, sizeof(t)))
			fr_die("SO_ATTACH_FILTER tcp");
		if (!filter_works())
			fr_die("the filter does not filter");
	}
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			char buf[256];
			const char *bad = compare(buf, sizeof(buf));
			if (bad)
				fr_status("BAD %s", bad);
			else if (!carries(c, s))
				fr_status("BAD the TCP connection carries no bytes");
			else if (udp_filtered >= 0 && !filter_is(udp_filtered, accept_y, 4))
				fr_status("BAD the UDP socket's filter (SO_GET_FILTER) differs");
			else if (udp_filtered >= 0 && !filter_is(s, tcp_all, 1))
				fr_status("BAD the TCP socket's filter (SO_GET_FILTER) differs");
			else if (udp_filtered >= 0 && !filter_works())
				fr_status("BAD the UDP socket's filter does not filter");
			else
				fr_status("ok pid=%d n=%d", (int)getpid(), nwants);
		}
		fr_log_tick(tick++);
		usleep(10000);
	}
}
