/* A NETLINK_ROUTE socket whose reply to a link dump request was not read yet: the reply
 * cannot be re-created by a restore, so the dump must refuse it, naming it. The check peeks
 * that the reply still waits.
 * compat-object: netlink socket with an unread reply
 * compat-refuse: netlink socket
 */
#include "common.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

static int nl;

static void check(void)
{
	char buf[64];
	ssize_t n = recv(nl, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	if (n <= 0)
		fr_status("BAD the reply is gone (%zd)", n);
	else
		fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	nl = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {.h = {.nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1}};
	struct sockaddr_nl k = {.nl_family = AF_NETLINK};
	if (nl < 0 || sendto(nl, &req, sizeof(req), 0, (struct sockaddr *)&k, sizeof(k)) < 0)
		fr_die("netlink request");
	usleep(50000);
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
