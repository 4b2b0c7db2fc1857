/* Options of an established TCP connection: TCP_NODELAY, SO_KEEPALIVE with TCP_KEEPIDLE 77,
 * TCP_KEEPINTVL 11, TCP_KEEPCNT 4, SO_LINGER {1, 9}, TCP_USER_TIMEOUT 12345, IP_TOS 0x10,
 * SO_PRIORITY 3; its peer keeps the defaults.
 * compat-object: TCP socket options on an established connection
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static int a, b;

static int get(int fd, int lvl, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, lvl, opt, &v, &l))
		return -1000;
	return v;
}

static void check(void)
{
	struct linger lg;
	socklen_t ll = sizeof(lg);
	getsockopt(a, SOL_SOCKET, SO_LINGER, &lg, &ll);
	int v[8] = {get(a, IPPROTO_TCP, TCP_NODELAY), get(a, SOL_SOCKET, SO_KEEPALIVE),
		    get(a, IPPROTO_TCP, TCP_KEEPIDLE), get(a, IPPROTO_TCP, TCP_KEEPINTVL),
		    get(a, IPPROTO_TCP, TCP_KEEPCNT), get(a, IPPROTO_TCP, TCP_USER_TIMEOUT),
		    get(a, IPPROTO_IP, IP_TOS), get(a, SOL_SOCKET, SO_PRIORITY)};
	static const int want[8] = {1, 1, 77, 11, 4, 12345, 0x10, 3};
	static const char *names[8] = {"TCP_NODELAY", "SO_KEEPALIVE", "TCP_KEEPIDLE", "TCP_KEEPINTVL",
				       "TCP_KEEPCNT", "TCP_USER_TIMEOUT", "IP_TOS", "SO_PRIORITY"};
	char bad[512] = "";
	for (int i = 0; i < 8; i++)
		if (v[i] != want[i])
			snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), " %s=%d(want %d)", names[i], v[i],
				 want[i]);
	if (bad[0]) {
		fr_status("BAD%s", bad);
		return;
	}
	if (!lg.l_onoff || lg.l_linger != 9) {
		fr_status("BAD SO_LINGER {%d, %d}", lg.l_onoff, lg.l_linger);
		return;
	}
	if (get(b, IPPROTO_TCP, TCP_NODELAY) != 0 || get(b, SOL_SOCKET, SO_KEEPALIVE) != 0) {
		fr_status("BAD the peer got options it did not have");
		return;
	}
	char c;
	if (write(a, "z", 1) != 1 || read(b, &c, 1) != 1) {
		fr_status("BAD data");
		return;
	}
	fr_status("ok");
}

static void set(int fd, int lvl, int opt, int v)
{
	if (setsockopt(fd, lvl, opt, &v, sizeof(v)))
		fr_die("setsockopt");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in s = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(s);
	if (bind(l, (struct sockaddr *)&s, sizeof(s)) || listen(l, 1) || getsockname(l, (struct sockaddr *)&s, &len))
		fr_die("listen");
	a = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(a, (struct sockaddr *)&s, sizeof(s)))
		fr_die("connect");
	b = accept(l, NULL, NULL);
	close(l);
	set(a, IPPROTO_TCP, TCP_NODELAY, 1);
	set(a, SOL_SOCKET, SO_KEEPALIVE, 1);
	set(a, IPPROTO_TCP, TCP_KEEPIDLE, 77);
	set(a, IPPROTO_TCP, TCP_KEEPINTVL, 11);
	set(a, IPPROTO_TCP, TCP_KEEPCNT, 4);
	set(a, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345);
	set(a, IPPROTO_IP, IP_TOS, 0x10);
	set(a, SOL_SOCKET, SO_PRIORITY, 3);
	struct linger lg = {1, 9};
	setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
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
