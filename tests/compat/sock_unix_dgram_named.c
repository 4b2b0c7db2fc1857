/* An unconnected Unix datagram socket bound to a path, with datagrams queued from two other
 * (bound) sockets of the process: each read gives the datagram and its sender's name.
 * compat-object: unconnected Unix datagram socket with queued datagrams from several senders
 */
#include "common.h"

#include <sys/socket.h>
#include <sys/un.h>

static int srv, c1, c2;
static struct sockaddr_un sa, a1, a2;

static void bindto(int s, struct sockaddr_un *a, const char *name)
{
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path, sizeof(a->sun_path), "%s/%s", fr_dir, name);
	if (bind(s, (struct sockaddr *)a, sizeof(*a)))
		fr_die("bind");
}

static void queue_them(void)
{
	if (sendto(c1, "from-one", 8, 0, (struct sockaddr *)&sa, sizeof(sa)) != 8 ||
	    sendto(c2, "from-two!", 9, 0, (struct sockaddr *)&sa, sizeof(sa)) != 9)
		fr_die("sendto");
}

static void check(void)
{
	struct {
		const char *data;
		struct sockaddr_un *from;
	} want[2] = {{"from-one", &a1}, {"from-two!", &a2}};
	for (int i = 0; i < 2; i++) {
		char b[32];
		struct sockaddr_un f;
		socklen_t fl = sizeof(f);
		memset(&f, 0, sizeof(f));
		ssize_t n = recvfrom(srv, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
		if (n != (ssize_t)strlen(want[i].data) || memcmp(b, want[i].data, (size_t)n)) {
			fr_status("BAD datagram %d: %zd bytes", i, n);
			return;
		}
		if (strcmp(f.sun_path, want[i].from->sun_path)) {
			fr_status("BAD datagram %d from '%s', want '%s'", i, f.sun_path, want[i].from->sun_path);
			return;
		}
	}
	queue_them();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	c1 = socket(AF_UNIX, SOCK_DGRAM, 0);
	c2 = socket(AF_UNIX, SOCK_DGRAM, 0);
	bindto(srv, &sa, "srv.sock");
	bindto(c1, &a1, "c1.sock");
	bindto(c2, &a2, "c2.sock");
	queue_them();
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
