/* A TCP listener with two connections waiting in its accept queue (the clients are in the same
 * process, their data sent): after the restore both can be accepted and carry their data.
 * compat-object: TCP listener with connections pending in the accept queue
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int l, c1, c2;
static int done;

/* The checks before the dump (the runner checks twice) only see the listener readable; the
 * first after the restore accepts. */
static int checks;

static void check(void)
{
	if (checks++ < 2) {
		struct pollfd pf = {.fd = l, .events = POLLIN};
		if (poll(&pf, 1, 0) != 1)
			fr_status("BAD nothing pending");
		else
			fr_status("ok pending");
		return;
	}
	if (done) {
		fr_status("ok (accepted before)");
		return;
	}
	int got = 0;
	for (int i = 0; i < 2; i++) {
		struct pollfd pf = {.fd = l, .events = POLLIN};
		if (poll(&pf, 1, 1000) != 1)
			break;
		int s = accept(l, NULL, NULL);
		if (s < 0)
			break;
		char b[8] = "";
		struct pollfd ps = {.fd = s, .events = POLLIN};
		if (poll(&ps, 1, 1000) == 1 && read(s, b, 7) == 7 && !strncmp(b, "client", 6))
			got++;
		close(s);
	}
	if (got != 2) {
		fr_status("BAD %d of 2 pending connections accepted with their data", got);
		return;
	}
	done = 1;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 8) || getsockname(l, (struct sockaddr *)&a, &len))
		fr_die("listen");
	c1 = socket(AF_INET, SOCK_STREAM, 0);
	c2 = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c1, (struct sockaddr *)&a, sizeof(a)) || connect(c2, (struct sockaddr *)&a, sizeof(a)) ||
	    write(c1, "client1", 7) != 7 || write(c2, "client2", 7) != 7)
		fr_die("connect");
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
