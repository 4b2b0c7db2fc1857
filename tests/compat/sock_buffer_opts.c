/* Socket-level options on a TCP listener and a UDP socket: SO_RCVBUF/SO_SNDBUF set explicitly
 * (which also sets SO_BUF_LOCK's bits), SO_RCVLOWAT 5, SO_RCVTIMEO 1.5 s, SO_SNDTIMEO 2 s,
 * SO_MARK 42, SO_BROADCAST and SO_OOBINLINE.
 * compat-object: socket buffer sizes, timeouts, low-water mark, mark, broadcast, oobinline
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#ifndef SO_BUF_LOCK
#define SO_BUF_LOCK 72
#endif

static int t, u;
static int want_rcv, want_snd;

static int get(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, opt, &v, &l))
		return -1000;
	return v;
}

static void check(void)
{
	char bad[512] = "";
#define WANT(fd, opt, val)                                                                                   \
	do {                                                                                                 \
		int v_ = get(fd, opt);                                                                       \
		if (v_ != (val))                                                                             \
			snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), " %s=%d(want %d)", #opt, v_, (val)); \
	} while (0)
	WANT(t, SO_RCVBUF, want_rcv);
	WANT(t, SO_SNDBUF, want_snd);
	WANT(t, SO_BUF_LOCK, 3);
	WANT(t, SO_RCVLOWAT, 5);
	WANT(t, SO_MARK, 42);
	WANT(t, SO_OOBINLINE, 1);
	WANT(u, SO_BROADCAST, 1);
	struct timeval rt, st;
	socklen_t l = sizeof(rt);
	getsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &rt, &l);
	l = sizeof(st);
	getsockopt(u, SOL_SOCKET, SO_SNDTIMEO, &st, &l);
	if (rt.tv_sec != 1 || rt.tv_usec != 500000 || st.tv_sec != 2 || st.tv_usec != 0)
		snprintf(bad + strlen(bad), sizeof(bad) - strlen(bad), " timeouts %ld.%06ld/%ld.%06ld",
			 (long)rt.tv_sec, (long)rt.tv_usec, (long)st.tv_sec, (long)st.tv_usec);
	if (bad[0])
		fr_status("BAD%s", bad);
	else
		fr_status("ok");
}

static void set(int fd, int opt, int v)
{
	if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v)))
		fr_die("setsockopt");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	t = socket(AF_INET, SOCK_STREAM, 0);
	u = socket(AF_INET, SOCK_DGRAM, 0);
	set(t, SO_RCVBUF, 100000);
	set(t, SO_SNDBUF, 70000);
	set(t, SO_RCVLOWAT, 5);
	set(t, SO_MARK, 42);
	set(t, SO_OOBINLINE, 1);
	set(u, SO_BROADCAST, 1);
	struct timeval rt = {1, 500000}, st = {2, 0};
	setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof(rt));
	setsockopt(u, SOL_SOCKET, SO_SNDTIMEO, &st, sizeof(st));
	want_rcv = get(t, SO_RCVBUF);
	want_snd = get(t, SO_SNDBUF);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(t, (struct sockaddr *)&a, sizeof(a)) || listen(t, 3))
		fr_die("listen");
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
