/* Two UDP sockets bound to the same 127.0.0.1 port with SO_REUSEPORT (a group): both keep the port
 * and the option; a third socket without SO_REUSEPORT still cannot bind it.
 * compat-object: SO_REUSEPORT group of UDP sockets
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int a, b;
static struct sockaddr_in addr;

static void check(void)
{
	for (int i = 0; i < 2; i++) {
		int fd = i ? b : a, v = 0;
		socklen_t l = sizeof(v);
		struct sockaddr_in x;
		socklen_t xl = sizeof(x);
		getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &l);
		if (!v || getsockname(fd, (struct sockaddr *)&x, &xl) || x.sin_port != addr.sin_port) {
			fr_status("BAD socket %d: reuseport %d port %d want %d", i, v, ntohs(x.sin_port),
				  ntohs(addr.sin_port));
			return;
		}
	}
	int c = socket(AF_INET, SOCK_DGRAM, 0);
	int r = bind(c, (struct sockaddr *)&addr, sizeof(addr));
	close(c);
	if (r == 0) {
		fr_status("BAD a socket without SO_REUSEPORT could bind the group's port");
		return;
	}
	int d = socket(AF_INET, SOCK_DGRAM, 0), one = 1;
	setsockopt(d, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	r = bind(d, (struct sockaddr *)&addr, sizeof(addr));
	close(d);
	if (r) {
		fr_status("BAD a new SO_REUSEPORT socket cannot join the group: %s", strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	a = socket(AF_INET, SOCK_DGRAM, 0);
	b = socket(AF_INET, SOCK_DGRAM, 0);
	int one = 1;
	setsockopt(a, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	setsockopt(b, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof(addr);
	if (bind(a, (struct sockaddr *)&addr, sizeof(addr)) || getsockname(a, (struct sockaddr *)&addr, &l) ||
	    bind(b, (struct sockaddr *)&addr, sizeof(addr)))
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
