/* UDP and TCP on 127.0.0.1: a UDP echo socket (SO_REUSEADDR, SO_RCVBUF set), a TCP listener
 * (SO_REUSEADDR, backlog 5). The first accepted TCP connection is a data stream: the victim
 * (when TX > 0) writes TX bytes of a pattern to it at once (as fast as the peer takes them) and reads the
 * peer's pattern only after SIGUSR2, checking every byte. Later connections get "pong LINE".
 * Usage: sockets_inet STATEDIR TX. Reports "ports udp=U tcp=T"; SIGUSR1 reports
 * "ok pid=P rcvbuf=N reuse=R rx=RX tx=TX". */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static volatile sig_atomic_t reading;
static void on_usr2(int sig)
{
	(void)sig;
	reading = 1;
}

static unsigned char pat_tx(unsigned long i) { return (unsigned char)(i * 7 + 3); }
static unsigned char pat_rx(unsigned long i) { return (unsigned char)(i * 13 + 5); }

static int bound(int type, int port)
{
	int s = socket(AF_INET, type | SOCK_NONBLOCK, 0);
	int one = 1;
	if (s < 0 || setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		fr_die("socket");
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(s, (struct sockaddr *)&a, sizeof(a)))
		fr_die("bind");
	return s;
}

static int port_of(int s)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	getsockname(s, (struct sockaddr *)&a, &len);
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGUSR2, on_usr2, SA_RESTART);
	unsigned long tx_total = argc > 2 ? strtoul(argv[2], NULL, 10) : 0;
	int udp = bound(SOCK_DGRAM, 0);
	int rcv = 65536;
	if (setsockopt(udp, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)))
		fr_die("SO_RCVBUF");
	int l = bound(SOCK_STREAM, 0);
	if (listen(l, 5))
		fr_die("listen");
	fr_status("ports udp=%d tcp=%d", port_of(udp), port_of(l));
	fr_ready();
	int conn = -1, bad = 0;
	unsigned long tx = 0, rx = 0, tick = 0;
	for (;;) {
		struct pollfd p[3] = {{.fd = udp, .events = POLLIN}, {.fd = l, .events = POLLIN}, {.fd = conn, .events = 0}};
		if (conn >= 0 && tx < tx_total)
			p[2].events |= POLLOUT;
		if (conn >= 0 && reading)
			p[2].events |= POLLIN;
		int n = poll(p, 3, 200);
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			int got = 0, reuse = 0;
			socklen_t len = sizeof(got);
			getsockopt(udp, SOL_SOCKET, SO_RCVBUF, &got, &len);
			len = sizeof(reuse);
			getsockopt(l, SOL_SOCKET, SO_REUSEADDR, &reuse, &len);
			if (bad)
				fr_status("BAD pattern rx=%lu", rx);
			else
				fr_status("ok pid=%d rcvbuf=%d reuse=%d rx=%lu tx=%lu", (int)getpid(), got, reuse, rx, tx);
		}
		if (n <= 0) {
			if (n == 0)
				fr_log_tick(++tick);
			continue;
		}
		if (p[0].revents & POLLIN) {
			char buf[512];
			struct sockaddr_in from;
			socklen_t flen = sizeof(from);
			ssize_t r = recvfrom(udp, buf + 5, sizeof(buf) - 5, 0, (struct sockaddr *)&from, &flen);
			if (r > 0) {
				memcpy(buf, "echo:", 5);
				sendto(udp, buf, (size_t)r + 5, 0, (struct sockaddr *)&from, flen);
			}
		}
		if (p[1].revents & POLLIN) {
			int c = accept4(l, NULL, NULL, 0);
			if (c >= 0 && conn < 0 && tx_total > 0) {
				fcntl(c, F_SETFL, O_NONBLOCK);
				conn = c;
				fr_status("accepted");
			} else if (c >= 0) {
				char buf[128];
				ssize_t r = read(c, buf, sizeof(buf) - 1);
				if (r > 0) {
					char out[160];
					buf[r] = 0;
					int m = snprintf(out, sizeof(out), "pong %s", buf);
					if (write(c, out, (size_t)m) != m)
						fr_status("BAD reply");
				}
				close(c);
			}
		}
		if (conn >= 0 && (p[2].revents & POLLOUT)) {
			unsigned char buf[16384];
			size_t want = tx_total - tx < sizeof(buf) ? tx_total - tx : sizeof(buf);
			for (size_t i = 0; i < want; i++)
				buf[i] = pat_tx(tx + i);
			ssize_t w = write(conn, buf, want);
			if (w > 0)
				tx += (unsigned long)w;
			if (tx == tx_total)
				fr_status("sent %lu", tx);
		}
		if (conn >= 0 && (p[2].revents & (POLLIN | POLLHUP))) {
			unsigned char buf[16384];
			ssize_t r = read(conn, buf, sizeof(buf));
			if (r > 0) {
				for (ssize_t i = 0; i < r; i++)
					if (buf[i] != pat_rx(rx + (unsigned long)i))
						bad = 1;
				rx += (unsigned long)r;
			} else if (r == 0) {
				fr_status("eof rx=%lu", rx);
				close(conn);
				conn = -1;
			}
		}
	}
}
