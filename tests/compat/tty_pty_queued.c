/* A pty pair in raw mode with bytes queued both ways and unread: typed into the master (the
 * slave's input) and written by the slave (the master's output).
 * The first check (before the dump) only counts them (FIONREAD).
 * compat-object: pty pair with queued bytes both ways
 */
#include "common.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

static int m, s;
static int checks;

static int readall(int fd, char *b, int want)
{
	int got = 0;
	while (got < want) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		if (poll(&pf, 1, 500) != 1)
			break;
		ssize_t n = read(fd, b + got, (size_t)(want - got));
		if (n <= 0)
			break;
		got += (int)n;
	}
	return got;
}

static void check(void)
{
	int in_s = -1, in_m = -1;
	ioctl(s, FIONREAD, &in_s);
	ioctl(m, FIONREAD, &in_m);
	if (in_s != 13 || in_m != 14) {
		fr_status("BAD queued: slave input %d (want 13), master input %d (want 14)", in_s, in_m);
		return;
	}
	if (checks++ == 0) {
		fr_status("ok counted");
		return;
	}
	char b[32];
	if (readall(s, b, 13) != 13 || memcmp(b, "typed-to-tty!", 13)) {
		fr_status("BAD slave input differs");
		return;
	}
	if (readall(m, b, 14) != 14 || memcmp(b, "output-of-tty!", 14)) {
		fr_status("BAD master input differs");
		return;
	}
	if (write(m, "typed-to-tty!", 13) != 13 || write(s, "output-of-tty!", 14) != 14)
		fr_die("refill");
	usleep(20000);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		fr_die("openpt");
	s = open(ptsname(m), O_RDWR | O_NOCTTY);
	struct termios t;
	tcgetattr(s, &t);
	cfmakeraw(&t);
	if (s < 0 || tcsetattr(s, TCSANOW, &t))
		fr_die("raw");
	if (write(m, "typed-to-tty!", 13) != 13 || write(s, "output-of-tty!", 14) != 14)
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
