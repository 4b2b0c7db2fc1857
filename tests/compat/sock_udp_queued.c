/* A UDP socket bound to 127.0.0.1 with three datagrams queued from another socket of the
 * process: after the restore they are read with their boundaries and their sender's address.
 * compat-object: UDP bound socket with queued datagrams
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int r, s;
static struct sockaddr_in ra, sa;

static void send3(void)
{
	const char *m[3] = {"one", "datagram-two", ""};
	for (int i = 0; i < 3; i++)
		if (sendto(s, m[i], strlen(m[i]), 0, (struct sockaddr *)&ra, sizeof(ra)) != (ssize_t)strlen(m[i]))
			fr_die("sendto");
	usleep(20000);
}

static void check(void)
{
	const char *m[3] = {"one", "datagram-two", ""};
	for (int i = 0; i < 3; i++) {
		char b[64];
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(r, b, sizeof(b), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		if (n != (ssize_t)strlen(m[i]) || memcmp(b, m[i], (size_t)n)) {
			fr_status("BAD datagram %d: %zd bytes (%s)", i, n, n < 0 ? strerror(errno) : "differs");
			return;
		}
		if (from.sin_port != sa.sin_port) {
			fr_status("BAD datagram %d from port %d, want %d", i, ntohs(from.sin_port), ntohs(sa.sin_port));
			return;
		}
	}
	send3();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	r = socket(AF_INET, SOCK_DGRAM, 0);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	ra.sin_family = sa.sin_family = AF_INET;
	ra.sin_addr.s_addr = sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(ra);
	if (bind(r, (struct sockaddr *)&ra, sizeof(ra)) || getsockname(r, (struct sockaddr *)&ra, &len))
		fr_die("bind");
	len = sizeof(sa);
	if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) || getsockname(s, (struct sockaddr *)&sa, &len))
		fr_die("bind");
	send3();
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
