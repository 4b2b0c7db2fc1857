/* A Unix listener with a connection from the process not accepted yet, into which the
 * connecting socket already wrote: that data sits in a socket only accept() can reach, which
 * a dump that ends the process does (a --leave-running one refuses it, naming it: see
 * tests/tests/sockets.rs). The check polls the listener (a connection waits) and that the
 * client's bytes are still unread (SIOCOUTQ), without accepting; sock_unix_listener_pending
 * accepts and reads them.
 * compat-object: Unix pending connection holding data its client wrote
 */
#include "common.h"

#include <linux/sockios.h>
#include <poll.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

static int l, c;

static void check(void)
{
	struct pollfd p = {.fd = l, .events = POLLIN};
	int out = 0;
	ioctl(c, SIOCOUTQ, &out);
	if (poll(&p, 1, 0) != 1)
		fr_status("BAD no connection waits on the listener");
	else if (out <= 0)
		fr_status("BAD the client's bytes are gone (SIOCOUTQ %d)", out);
	else
		fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "compat-pending-%d", (int)getpid());
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (bind(l, (struct sockaddr *)&a, len) || listen(l, 2) || connect(c, (struct sockaddr *)&a, len) ||
	    write(c, "early", 5) != 5)
		fr_die("pending connection");
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
