/* A NETLINK_ROUTE socket bound with a chosen port id (pid + 0x10000000) and the RTMGRP_LINK group:
 * the port id and groups are the same, and an RTM_GETLINK dump request is answered.
 * compat-object: netlink route socket (port id, groups)
 */
#include "common.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

static int nl;
static uint32_t portid;

static void check(void)
{
	struct sockaddr_nl a;
	socklen_t l = sizeof(a);
	if (getsockname(nl, (struct sockaddr *)&a, &l) || a.nl_pid != portid || a.nl_groups != RTMGRP_LINK) {
		fr_status("BAD port id %u (want %u) groups %x", a.nl_pid, portid, a.nl_groups);
		return;
	}
	struct {
		struct nlmsghdr h;
		struct rtgenmsg g;
	} req = {.h = {.nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP,
		       .nlmsg_seq = 77},
		 .g = {.rtgen_family = AF_UNSPEC}};
	if (send(nl, &req, sizeof(req), 0) != sizeof(req)) {
		fr_status("BAD send: %s", strerror(errno));
		return;
	}
	char buf[65536];
	int links = 0, done = 0;
	while (!done) {
		ssize_t n = recv(nl, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				done = 1;
			else if (h->nlmsg_type == RTM_NEWLINK && h->nlmsg_seq == 77)
				links++;
		}
	}
	if (!done || links < 1) {
		fr_status("BAD RTM_GETLINK: %d links, done %d", links, done);
		return;
	}
	fr_status("ok links=%d", links);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	portid = (uint32_t)getpid() + 0x10000000u;
	struct sockaddr_nl a = {.nl_family = AF_NETLINK, .nl_pid = portid, .nl_groups = RTMGRP_LINK};
	if (nl < 0 || bind(nl, (struct sockaddr *)&a, sizeof(a)))
		fr_die("netlink");
	struct timeval tv = {2, 0};
	setsockopt(nl, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
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
