/* An established TCP loopback pair whose ends set SO_REUSEADDR, SO_KEEPALIVE with its timers,
 * and a locked send buffer (SO_SNDBUF, SO_BUF_LOCK). TCP repair mode resets SO_REUSEADDR when
 * it is left, so this is lost unless set again. The check reads every option back and passes
 * a byte each way.
 * compat-object: SO_REUSEADDR and a locked buffer on an established TCP connection
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

static int c, s, sndbuf;

static int get(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	getsockopt(fd, level, name, &v, &len);
	return v;
}

static int carries(int from, int to)
{
	char x = 'z', y = 0;
	struct pollfd p = {.fd = to, .events = POLLIN};
	return write(from, &x, 1) == 1 && poll(&p, 1, 5000) == 1 && read(to, &y, 1) == 1 && y == 'z';
}

static void check(void)
{
	if (get(c, SOL_SOCKET, SO_REUSEADDR) != 1 || get(s, SOL_SOCKET, SO_REUSEADDR) != 1)
		fr_status("BAD SO_REUSEADDR %d %d, want 1 1", get(c, SOL_SOCKET, SO_REUSEADDR),
			  get(s, SOL_SOCKET, SO_REUSEADDR));
	else if (get(c, SOL_SOCKET, SO_KEEPALIVE) != 1 || get(c, IPPROTO_TCP, TCP_KEEPIDLE) != 99 ||
		 get(c, IPPROTO_TCP, TCP_KEEPINTVL) != 9 || get(c, IPPROTO_TCP, TCP_KEEPCNT) != 3)
		fr_status("BAD keepalive settings");
	else if (get(c, SOL_SOCKET, SO_SNDBUF) != sndbuf || get(c, SOL_SOCKET, SO_BUF_LOCK) != 1)
		fr_status("BAD SO_SNDBUF %d (want %d) SO_BUF_LOCK %d (want 1)", get(c, SOL_SOCKET, SO_SNDBUF), sndbuf,
			  get(c, SOL_SOCKET, SO_BUF_LOCK));
	else if (!carries(c, s) || !carries(s, c))
		fr_status("BAD the connection carries no bytes");
	else if (getpid() != fr_pid0)
		fr_status("BAD pid %d, want %d", (int)getpid(), (int)fr_pid0);
	else
		fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int one = 1, l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(a);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&a, &len))
		fr_die("listen");
	c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&a, sizeof(a)))
		fr_die("connect");
	s = accept(l, NULL, NULL);
	close(l);
	int v = 99, i = 9, n = 3, buf = 48000;
	if (s < 0 || setsockopt(c, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(c, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ||
	    setsockopt(c, IPPROTO_TCP, TCP_KEEPIDLE, &v, sizeof(v)) || setsockopt(c, IPPROTO_TCP, TCP_KEEPINTVL, &i, sizeof(i)) ||
	    setsockopt(c, IPPROTO_TCP, TCP_KEEPCNT, &n, sizeof(n)) || setsockopt(c, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf)))
		fr_die("setsockopt");
	sndbuf = get(c, SOL_SOCKET, SO_SNDBUF);
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
