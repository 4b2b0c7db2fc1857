/* A Unix seqpacket listener on an abstract name (with the pid in it) and backlog 3: the name,
 * SO_ACCEPTCONN, and a new client connecting by the name gets its records through.
 * compat-object: abstract Unix seqpacket listener
 */
#include "common.h"

#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static int l;
static struct sockaddr_un addr;
static socklen_t alen;

static void check(void)
{
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	if (getsockname(l, (struct sockaddr *)&a, &len) || len != alen || memcmp(&a, &addr, len)) {
		fr_status("BAD name changed");
		return;
	}
	int type = 0;
	socklen_t tl = sizeof(type);
	getsockopt(l, SOL_SOCKET, SO_TYPE, &type, &tl);
	if (type != SOCK_SEQPACKET) {
		fr_status("BAD type %d", type);
		return;
	}
	int c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (connect(c, (struct sockaddr *)&addr, alen)) {
		fr_status("BAD connect by name: %s", strerror(errno));
		close(c);
		return;
	}
	struct pollfd pf = {.fd = l, .events = POLLIN};
	int s = poll(&pf, 1, 1000) == 1 ? accept(l, NULL, NULL) : -1;
	char b[8];
	int ok = s >= 0 && send(c, "r1", 2, 0) == 2 && send(c, "r22", 3, 0) == 3 && recv(s, b, 8, 0) == 2 &&
		 recv(s, b, 8, 0) == 3;
	close(s);
	close(c);
	if (!ok) {
		fr_status("BAD records over the new connection");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	addr.sun_family = AF_UNIX;
	int n = snprintf(addr.sun_path + 1, sizeof(addr.sun_path) - 1, "ferry-compat-abstract-%d", (int)getpid());
	alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
	if (bind(l, (struct sockaddr *)&addr, alen) || listen(l, 3))
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
