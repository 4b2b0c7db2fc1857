/* A pseudo-terminal pair with both ends in the tree: the parent holds the master (packet
 * mode, settings of its own, a window size), a child leads a session whose controlling
 * terminal is the slave and answers each line it reads ("echo:LINE", or "ctty:ok" when asked
 * "ctty?" and the slave is still its controlling terminal). Between checks bytes are queued
 * both ways: the master has "hello N\r\n" (echo) "echo:hello N\r\n" (the child's answer) and
 * "partial N" (echo) unread; the slave has the partial line "partial N" unread. A second pair
 * stays locked and never opened. A check reads exactly those bytes, completes the line, asks
 * the child for its terminal, compares the settings, and queues the next round.
 * Usage: pty_pair STATEDIR. Dump with --tree. */
#include "common.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

static int m, m2;
static pid_t child;
static struct termios want;
static const struct winsize ws_want = {33, 101, 640, 480}, ws2_want = {7, 9, 0, 0};
static int round_no;

static void child_main(const char *name)
{
	signal(SIGUSR1, SIG_IGN);
	if (setsid() < 0)
		_exit(10);
	int s = open(name, O_RDWR); /* without O_NOCTTY: our controlling terminal */
	if (s < 0)
		_exit(11);
	close(m);
	close(m2);
	char line[256];
	for (;;) {
		ssize_t n = read(s, line, sizeof line - 1);
		if (n <= 0)
			_exit(12);
		line[n] = 0;
		char out[300];
		int len;
		if (strcmp(line, "ctty?\n") == 0) {
			int ok = tcgetsid(s) == getpid() && getsid(0) == getpid() &&
				 tcgetpgrp(s) == getpgrp();
			len = snprintf(out, sizeof out, "ctty:%s\n", ok ? "ok" : "bad");
		} else {
			len = snprintf(out, sizeof out, "echo:%s", line);
		}
		if (write(s, out, len) != len)
			_exit(13);
	}
}

/* Reads exactly `len` bytes of data from the master (packet mode: each read starts with a
 * status byte, which must be TIOCPKT_DATA), then makes sure nothing more comes. */
static int read_exact(char *buf, int len, char *why, size_t why_len)
{
	int got = 0;
	double end = fr_now() + 5;
	while (got < len) {
		struct pollfd p = {m, POLLIN, 0};
		if (poll(&p, 1, 100) < 0 && errno != EINTR)
			fr_die("poll");
		if (fr_now() > end) {
			snprintf(why, why_len, "only %d of %d bytes came: %.*s", got, len, got, buf);
			return -1;
		}
		if (!(p.revents & POLLIN))
			continue;
		char tmp[512];
		ssize_t n = read(m, tmp, sizeof tmp < (size_t)(len - got + 1) ? sizeof tmp : (size_t)(len - got + 1));
		if (n < 0) {
			snprintf(why, why_len, "read: %s", strerror(errno));
			return -1;
		}
		if (n == 0)
			continue;
		if (tmp[0] != TIOCPKT_DATA) {
			snprintf(why, why_len, "packet status %#x", tmp[0] & 0xff);
			return -1;
		}
		memcpy(buf + got, tmp + 1, n - 1);
		got += n - 1;
	}
	struct pollfd p = {m, POLLIN, 0};
	if (poll(&p, 1, 50) > 0 && (p.revents & POLLIN)) {
		char tmp[256];
		ssize_t n = read(m, tmp, sizeof tmp - 1);
		snprintf(why, why_len, "%zd more bytes: %.*s", n, n > 1 ? (int)n - 1 : 0, tmp + 1);
		return -1;
	}
	return 0;
}

static void put(const char *s)
{
	if (write(m, s, strlen(s)) != (ssize_t)strlen(s))
		fr_die("write master");
}

/* Waits until the master has at least `len` bytes to read. */
static void wait_queued(int len)
{
	double end = fr_now() + 5;
	int n = 0;
	while (fr_now() < end) {
		if (ioctl(m, FIONREAD, &n) == 0 && n >= len)
			return;
		usleep(1000);
	}
	fprintf(stderr, "only %d of %d bytes queued\n", n, len);
	exit(5);
}

/* Queues the round: the echo and the answer to "hello N", then the partial line. */
static void arm(void)
{
	char h[64], p[64];
	snprintf(h, sizeof h, "hello %d\n", round_no);
	snprintf(p, sizeof p, "partial %d", round_no);
	/* "hello N\r\n" + "echo:hello N\r\n" */
	int answered = 2 * ((int)strlen(h) + 1) + 5;
	put(h);
	wait_queued(answered);
	put(p);
	wait_queued(answered + (int)strlen(p));
}

static int same_termios(const struct termios *a, const struct termios *b)
{
	return a->c_iflag == b->c_iflag && a->c_oflag == b->c_oflag &&
	       a->c_cflag == b->c_cflag && a->c_lflag == b->c_lflag &&
	       memcmp(a->c_cc, b->c_cc, sizeof a->c_cc) == 0 &&
	       cfgetispeed(a) == cfgetispeed(b) && cfgetospeed(a) == cfgetospeed(b);
}

static void check(void)
{
	char why[512];
	struct termios t;
	struct winsize ws;
	int v;
	if (getpid() != fr_pid0)
		return fr_status("BAD pid %d, was %d", (int)getpid(), (int)fr_pid0);
	if (tcgetattr(m, &t) || !same_termios(&t, &want))
		return fr_status("BAD termios iflag %#x oflag %#x cflag %#x lflag %#x intr %#x",
				 t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag, t.c_cc[VINTR]);
	if (ioctl(m, TIOCGWINSZ, &ws) || memcmp(&ws, &ws_want, sizeof ws))
		return fr_status("BAD winsize %dx%d", ws.ws_row, ws.ws_col);
	if (ioctl(m, TIOCGPKT, &v) || v != 1)
		return fr_status("BAD packet mode %d", v);
	if (ioctl(m, TIOCGPTLCK, &v) || v != 0)
		return fr_status("BAD lock %d", v);
	if (ioctl(m2, TIOCGPTLCK, &v) || v != 1)
		return fr_status("BAD second pair lock %d", v);
	if (ioctl(m2, TIOCGWINSZ, &ws) || memcmp(&ws, &ws2_want, sizeof ws))
		return fr_status("BAD second pair winsize %dx%d", ws.ws_row, ws.ws_col);

	char expect[256], got[256];
	int n = snprintf(expect, sizeof expect, "hello %d\r\necho:hello %d\r\npartial %d",
			 round_no, round_no, round_no);
	if (read_exact(got, n, why, sizeof why))
		return fr_status("BAD output queue: %s", why);
	if (memcmp(got, expect, n))
		return fr_status("BAD output queue %.*s", n, got);
	put(" done\n");
	n = snprintf(expect, sizeof expect, " done\r\necho:partial %d done\r\n", round_no);
	if (read_exact(got, n, why, sizeof why))
		return fr_status("BAD input queue (partial line): %s", why);
	if (memcmp(got, expect, n))
		return fr_status("BAD input queue (partial line) %.*s", n, got);
	put("ctty?\n");
	n = snprintf(expect, sizeof expect, "ctty?\r\nctty:ok\r\n");
	if (read_exact(got, n, why, sizeof why))
		return fr_status("BAD controlling terminal: %s", why);
	if (memcmp(got, expect, n))
		return fr_status("BAD controlling terminal %.*s", n, got);
	round_no++;
	arm();
	fr_status("ok checks=%d child=%d slave=%s", round_no, (int)child, ptsname(m));
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		fr_die("posix_openpt");
	m2 = posix_openpt(O_RDWR | O_NOCTTY);
	if (m2 < 0)
		fr_die("posix_openpt 2");
	if (ioctl(m2, TIOCSWINSZ, &ws2_want))
		fr_die("TIOCSWINSZ 2");
	struct termios t;
	if (tcgetattr(m, &t))
		fr_die("tcgetattr");
	t.c_lflag |= ECHO | ICANON;
	t.c_cc[VINTR] = 0x10;
	t.c_cc[VERASE] = 0x08;
	cfsetispeed(&t, B19200);
	cfsetospeed(&t, B19200);
	if (tcsetattr(m, TCSANOW, &t) || tcgetattr(m, &want))
		fr_die("tcsetattr");
	if (ioctl(m, TIOCSWINSZ, &ws_want))
		fr_die("TIOCSWINSZ");
	char name[64];
	snprintf(name, sizeof name, "%s", ptsname(m));
	child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0)
		child_main(name);
	int one = 1;
	if (ioctl(m, TIOCPKT, &one))
		fr_die("TIOCPKT");
	/* Wait for the child to hold its terminal: its first answer. */
	put("ctty?\n");
	char why[256], got[64];
	const char *e = "ctty?\r\nctty:ok\r\n";
	if (read_exact(got, (int)strlen(e), why, sizeof why) || memcmp(got, e, strlen(e))) {
		fprintf(stderr, "child not ready: %s\n", why);
		return 4;
	}
	arm();
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
