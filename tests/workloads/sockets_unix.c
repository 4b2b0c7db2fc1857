/* Unix sockets: socketpairs (stream, dgram, seqpacket) with data queued in both directions,
 * a listening socket on a path and one on an abstract name, and optionally a client connected
 * to an outside listener (`connect PATH`).
 * The main loop accepts clients on both listeners: each sends a line and gets "pong LINE".
 * SIGUSR1: read back the queued data, check it and its message boundaries, check that the
 * pairs still carry new data, write "hello from PID\n" to the outside peer, report
 * "ok pid=P ...". */
#include "common.h"

#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static int sp[2], dp[2], qp[2], lpath = -1, labstract = -1, ext = -1;
static int checked;

static int listener(const char *name, int abstract)
{
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	if (s < 0)
		fr_die("socket");
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	socklen_t len;
	if (abstract) {
		a.sun_path[0] = 0;
		strncpy(a.sun_path + 1, name, sizeof(a.sun_path) - 2);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	} else {
		strncpy(a.sun_path, name, sizeof(a.sun_path) - 1);
		len = sizeof(a);
	}
	if (bind(s, (struct sockaddr *)&a, len))
		fr_die("bind");
	if (listen(s, 7))
		fr_die("listen");
	return s;
}

static int expect(int fd, const char *want, int flags, const char *what)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, flags | MSG_DONTWAIT);
	if (n < 0) {
		fr_status("BAD %s: %s", what, strerror(errno));
		return 0;
	}
	buf[n] = 0;
	if ((size_t)n != strlen(want) || memcmp(buf, want, (size_t)n)) {
		fr_status("BAD %s: got '%s' want '%s'", what, buf, want);
		return 0;
	}
	return 1;
}

static void check(void)
{
	int ok = 1;
	if (!checked) {
		ok &= expect(sp[1], "hello-stream-1hello-stream-2", 0, "stream s1");
		ok &= expect(sp[0], "back", 0, "stream s0");
		ok &= expect(dp[1], "a", 0, "dgram 1");
		ok &= expect(dp[1], "bb", 0, "dgram 2");
		ok &= expect(dp[1], "", 0, "dgram 3 (empty)");
		ok &= expect(dp[1], "dddd", 0, "dgram 4");
		ok &= expect(qp[1], "rec1", 0, "seqpacket 1");
		ok &= expect(qp[1], "record-two", 0, "seqpacket 2");
		ok &= expect(qp[0], "rev", 0, "seqpacket back");
		checked = 1;
	}
	/* The pairs still carry data both ways. */
	if (write(sp[0], "new", 3) != 3 || write(dp[1], "x", 1) != 1 || write(qp[1], "yy", 2) != 2)
		fr_status("BAD write to pairs: %s", strerror(errno));
	ok &= expect(sp[1], "new", 0, "stream new");
	ok &= expect(dp[0], "x", 0, "dgram new");
	ok &= expect(qp[0], "yy", 0, "seqpacket new");
	if (ext >= 0) {
		char msg[64];
		int n = snprintf(msg, sizeof(msg), "hello from %d\n", (int)getpid());
		if (write(ext, msg, (size_t)n) != n) {
			fr_status("BAD write to the outside peer: %s", strerror(errno));
			ok = 0;
		}
	}
	if (ok)
		fr_status("ok pid=%d", (int)getpid());
}

static void serve(int l)
{
	int c = accept(l, NULL, NULL);
	if (c < 0)
		return;
	char buf[128];
	ssize_t n = read(c, buf, sizeof(buf) - 1);
	if (n > 0) {
		buf[n] = 0;
		char out[160];
		int m = snprintf(out, sizeof(out), "pong %s", buf);
		if (write(c, out, (size_t)m) != m)
			fr_status("BAD reply: %s", strerror(errno));
	}
	close(c);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dp) ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET, 0, qp))
		fr_die("socketpair");
	/* Two writes to a stream read back as one run; datagrams and records keep boundaries. */
	if (write(sp[0], "hello-stream-1", 14) != 14 || write(sp[0], "hello-stream-2", 14) != 14 ||
	    write(sp[1], "back", 4) != 4)
		fr_die("write stream");
	if (send(dp[0], "a", 1, 0) != 1 || send(dp[0], "bb", 2, 0) != 2 || send(dp[0], "", 0, 0) != 0 ||
	    send(dp[0], "dddd", 4, 0) != 4)
		fr_die("send dgram");
	if (send(qp[0], "rec1", 4, 0) != 4 || send(qp[0], "record-two", 10, 0) != 10 ||
	    send(qp[1], "rev", 3, 0) != 3)
		fr_die("send seqpacket");
	char path[4096], abs[64];
	snprintf(path, sizeof(path), "%s/listen.sock", fr_dir);
	snprintf(abs, sizeof(abs), "ferry-test-%d", (int)getpid());
	lpath = listener(path, 0);
	labstract = listener(abs, 1);
	if (argc >= 4 && !strcmp(argv[2], "connect")) {
		ext = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un a = {.sun_family = AF_UNIX};
		strncpy(a.sun_path, argv[3], sizeof(a.sun_path) - 1);
		if (ext < 0 || connect(ext, (struct sockaddr *)&a, sizeof(a)))
			fr_die("connect");
	}
	fr_status("abstract=%s", abs);
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		struct pollfd p[2] = {{.fd = lpath, .events = POLLIN}, {.fd = labstract, .events = POLLIN}};
		int n = poll(p, 2, 200);
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		if (n < 0)
			continue;
		if (n == 0)
			fr_log_tick(++tick);
		for (int i = 0; i < 2; i++)
			if (p[i].revents & POLLIN)
				serve(p[i].fd);
	}
}
