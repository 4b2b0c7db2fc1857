/* A Unix seqpacket listener (abstract name) with a connection from the process pending in its
 * accept queue, into which the client wrote two records: after the restore it is accepted
 * and reads the two records with their boundaries, and the client end is connected to it.
 * compat-object: Unix seqpacket listener with a pending connection holding records
 */
#include "common.h"

#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static int l, c;
static int checks;
static struct sockaddr_un a = {.sun_family = AF_UNIX};
static socklen_t alen;

static void connect_and_write(void)
{
	c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, alen) || send(c, "rec-1", 5, 0) != 5 ||
	    send(c, "record-two", 10, 0) != 10)
		fr_die("connect and write");
}

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
	char b[32];
	ssize_t r1 = s < 0 ? -1 : recv(s, b, sizeof(b), MSG_DONTWAIT);
	int first = r1 == 5 && !memcmp(b, "rec-1", 5);
	ssize_t r2 = s < 0 ? -1 : recv(s, b, sizeof(b), MSG_DONTWAIT);
	if (!first || r2 != 10 || memcmp(b, "record-two", 10)) {
		fr_status("BAD the accepted connection's records (%zd, %zd bytes)", r1, r2);
		return;
	}
	if (send(s, "reply", 5, 0) != 5 || recv(c, b, sizeof(b), MSG_DONTWAIT) != 5) {
		fr_status("BAD the client end is not connected to the accepted one");
		return;
	}
	close(s);
	close(c);
	connect_and_write();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "ferry-compat-seqpending-%d", (int)getpid());
	alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
	l = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (bind(l, (struct sockaddr *)&a, alen) || listen(l, 4))
		fr_die("listen");
	connect_and_write();
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
