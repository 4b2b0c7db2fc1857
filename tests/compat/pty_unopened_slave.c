/* Conformance victim: a pseudo-terminal pair unlocked (unlockpt) whose slave nobody opened.
 * compat-object: pseudo-terminal pair unlocked, slave never opened
 * compat-refuse: slave was never opened
 *
 * Bytes written to the master wait in the slave's line discipline; reading them would mean
 * opening the slave, which the master would notice, so ferry refuses the dump. check() reads
 * the lock state and window size back, and that the master has nothing to read (EAGAIN, not
 * EIO: the slave was never opened and closed).
 */
#include "common.h"

#include <sys/ioctl.h>
#include <termios.h>

static int m;
static const struct winsize ws_want = {21, 77, 0, 0};

static void check(void)
{
	int v = -1;
	struct winsize ws;
	char b;
	if (getpid() != fr_pid0)
		return fr_status("BAD pid %d, was %d", (int)getpid(), (int)fr_pid0);
	if (ioctl(m, TIOCGPTLCK, &v) || v != 0)
		return fr_status("BAD lock %d", v);
	if (ioctl(m, TIOCGWINSZ, &ws) || memcmp(&ws, &ws_want, sizeof ws))
		return fr_status("BAD winsize %dx%d", ws.ws_row, ws.ws_col);
	errno = 0;
	ssize_t n = read(m, &b, 1);
	if (n != -1 || errno != EAGAIN)
		return fr_status("BAD master read %zd: %s", n, strerror(errno));
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	m = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (m < 0 || grantpt(m) || unlockpt(m))
		fr_die("posix_openpt");
	if (ioctl(m, TIOCSWINSZ, &ws_want))
		fr_die("TIOCSWINSZ");
	struct termios t; /* no echo: what is typed stays in the slave's queue alone */
	if (tcgetattr(m, &t))
		fr_die("tcgetattr");
	t.c_lflag &= ~(tcflag_t)ECHO;
	if (tcsetattr(m, TCSANOW, &t))
		fr_die("tcsetattr");
	if (write(m, "typed ahead\n", 12) != 12)
		fr_die("write master");
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
