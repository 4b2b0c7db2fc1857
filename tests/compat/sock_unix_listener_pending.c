/* A Unix stream listener on a path with a connection pending in its accept queue (the client
 * in the same process, its bytes sent): after the restore it is accepted and carries its bytes,
 * and the client end is still connected to it.
 * compat-object: Unix listener with a pending connection
 */
#include "common.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

static int l, c;
static int checks;

static void check(void)
{
	struct pollfd pf = {.fd = l, .events = POLLIN};
	if (poll(&pf, 1, 0) != 1) {
		fr_status("BAD no pending connection on the listener");
		return;
	}
	if (checks++ == 0) {
		fr_status("ok pending");
		return;
	}
	int s = accept(l, NULL, NULL);
	char b[16];
	if (s < 0 || recv(s, b, sizeof(b), MSG_DONTWAIT) != 5 || memcmp(b, "hello", 5)) {
		fr_status("BAD accepted connection or its bytes");
		return;
	}
	if (send(s, "reply", 5, 0) != 5 || recv(c, b, sizeof(b), MSG_DONTWAIT) != 5) {
		fr_status("BAD the client end is not connected to the accepted one");
		return;
	}
	close(s);
	/* Queue another for a further check. */
	close(c);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/l.sock", fr_dir);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)) || send(c, "hello", 5, 0) != 5)
		fr_die("reconnect");
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/l.sock", fr_dir);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 4) || connect(c, (struct sockaddr *)&a, sizeof(a)) ||
	    send(c, "hello", 5, 0) != 5)
		fr_die("setup");
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
