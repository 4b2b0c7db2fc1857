/* TCP sockets that are neither listening nor connected: one fresh (unbound), one bound to
 * 127.0.0.1:port with SO_REUSEADDR. The bound one keeps its address and port, the fresh one stays unbound.
 * compat-object: TCP sockets unbound and bound-not-listening
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int fresh, bound;
static struct sockaddr_in baddr;

static void check(void)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	if (getsockname(bound, (struct sockaddr *)&a, &len) || a.sin_port != baddr.sin_port ||
	    a.sin_addr.s_addr != htonl(INADDR_LOOPBACK)) {
		fr_status("BAD bound socket's address changed (port %d want %d)", ntohs(a.sin_port),
			  ntohs(baddr.sin_port));
		return;
	}
	len = sizeof(a);
	if (getsockname(fresh, (struct sockaddr *)&a, &len) || a.sin_port != 0) {
		fr_status("BAD the unbound socket has port %d", ntohs(a.sin_port));
		return;
	}
	int type = 0;
	socklen_t tl = sizeof(type);
	getsockopt(fresh, SOL_SOCKET, SO_TYPE, &type, &tl);
	if (type != SOCK_STREAM) {
		fr_status("BAD type %d", type);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fresh = socket(AF_INET, SOCK_STREAM, 0);
	bound = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	setsockopt(bound, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	baddr.sin_family = AF_INET;
	baddr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(baddr);
	if (bind(bound, (struct sockaddr *)&baddr, sizeof(baddr)) ||
	    getsockname(bound, (struct sockaddr *)&baddr, &len))
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
