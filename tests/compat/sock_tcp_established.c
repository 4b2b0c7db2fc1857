/* A TCP connection over loopback with both ends in the process, bytes queued both ways (unread
 * in each receive queue): the bytes, then new bytes both ways, same addresses.
 * compat-object: TCP established loopback pair with queued data both ways
 * compat-dump-args: --tcp-established
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int a, b;
static struct sockaddr_in an, bn;
static int checks;

static int expect(int fd, const char *want)
{
	char buf[256];
	size_t got = 0, n = strlen(want);
	while (got < n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 2000) != 1)
			return 0;
		ssize_t r = read(fd, buf + got, n - got);
		if (r <= 0)
			return 0;
		got += (size_t)r;
	}
	return !memcmp(buf, want, n);
}

static void check(void)
{
	struct sockaddr_in x, y;
	socklen_t lx = sizeof(x), ly = sizeof(y);
	getsockname(a, (struct sockaddr *)&x, &lx);
	getpeername(b, (struct sockaddr *)&y, &ly);
	if (x.sin_port != an.sin_port || y.sin_port != an.sin_port) {
		fr_status("BAD addresses changed");
		return;
	}
	const char *to_b = checks ? "more-a-to-b" : "queued-from-a-to-b";
	const char *to_a = checks ? "more-b-to-a" : "queued-from-b-to-a";
	if (!expect(b, to_b) || !expect(a, to_a)) {
		fr_status("BAD queued bytes (check %d)", checks);
		return;
	}
	if (write(a, "more-a-to-b", 11) != 11 || write(b, "more-b-to-a", 11) != 11) {
		fr_status("BAD write: %s", strerror(errno));
		return;
	}
	usleep(20000);
	checks++;
	fr_status("ok");
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
	len = sizeof(an);
	getsockname(a, (struct sockaddr *)&an, &len);
	len = sizeof(bn);
	getsockname(b, (struct sockaddr *)&bn, &len);
	if (write(a, "queued-from-a-to-b", 18) != 18 || write(b, "queued-from-b-to-a", 18) != 18)
		fr_die("write");
	usleep(20000);
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
