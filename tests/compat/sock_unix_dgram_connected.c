/* A Unix datagram socket connected to a named datagram socket of the process, datagrams queued
 * on the named one: the connection (getpeername, send without an address) and the datagrams.
 * compat-object: Unix datagram socket connected to a named socket
 */
#include "common.h"

#include <sys/socket.h>
#include <sys/un.h>

static int srv, cli;
static struct sockaddr_un sa;

static void check(void)
{
	struct sockaddr_un p;
	socklen_t l = sizeof(p);
	memset(&p, 0, sizeof(p));
	if (getpeername(cli, (struct sockaddr *)&p, &l) || strcmp(p.sun_path, sa.sun_path)) {
		fr_status("BAD peer '%s', want '%s'", p.sun_path, sa.sun_path);
		return;
	}
	char b[16];
	ssize_t a = recv(srv, b, sizeof(b), MSG_DONTWAIT), c = recv(srv, b, sizeof(b), MSG_DONTWAIT);
	if (a != 3 || c != 5) {
		fr_status("BAD queued datagrams %zd %zd, want 3 5", a, c);
		return;
	}
	if (send(cli, "one", 3, 0) != 3 || send(cli, "three", 5, 0) != 5) {
		fr_status("BAD send without address: %s", strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	srv = socket(AF_UNIX, SOCK_DGRAM, 0);
	cli = socket(AF_UNIX, SOCK_DGRAM, 0);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/d.sock", fr_dir);
	if (bind(srv, (struct sockaddr *)&sa, sizeof(sa)) || connect(cli, (struct sockaddr *)&sa, sizeof(sa)) ||
	    send(cli, "one", 3, 0) != 3 || send(cli, "three", 5, 0) != 5)
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
