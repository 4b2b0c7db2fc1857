/* A pseudo-terminal pair (both ends in the process) with non-default termios on the slave:
 * raw-ish input flags, VMIN 3 / VTIME 7, VINTR ^B, 9600 baud, no echo, CS7|PARENB.
 * compat-object: pty pair termios settings
 */
#include "common.h"

#include <termios.h>

static int m, s;
static struct termios want;

static void check(void)
{
	struct termios t;
	if (tcgetattr(s, &t)) {
		fr_status("BAD tcgetattr: %s", strerror(errno));
		return;
	}
	if (t.c_iflag != want.c_iflag || t.c_oflag != want.c_oflag || t.c_cflag != want.c_cflag ||
	    t.c_lflag != want.c_lflag || memcmp(t.c_cc, want.c_cc, sizeof(t.c_cc)) ||
	    cfgetospeed(&t) != B9600) {
		fr_status("BAD termios i %o/%o o %o/%o c %o/%o l %o/%o vmin %d vtime %d", t.c_iflag, want.c_iflag, t.c_oflag,
			  want.c_oflag, t.c_cflag, want.c_cflag, t.c_lflag, want.c_lflag, t.c_cc[VMIN], t.c_cc[VTIME]);
		return;
	}
	/* The pair still talks: master -> slave. */
	if (write(m, "abc", 3) != 3) {
		fr_status("BAD write to master");
		return;
	}
	char b[8];
	ssize_t n = read(s, b, sizeof(b));
	if (n != 3) {
		fr_status("BAD slave read %zd", n);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		fr_die("openpt");
	s = open(ptsname(m), O_RDWR | O_NOCTTY);
	if (s < 0)
		fr_die("slave");
	struct termios t;
	tcgetattr(s, &t);
	t.c_iflag &= ~(tcflag_t)(ICRNL | IXON);
	t.c_iflag |= IGNBRK;
	t.c_oflag &= ~(tcflag_t)OPOST;
	t.c_lflag &= ~(tcflag_t)(ECHO | ICANON | IEXTEN);
	t.c_cflag = (t.c_cflag & ~(tcflag_t)CSIZE) | CS7 | PARENB;
	t.c_cc[VMIN] = 3;
	t.c_cc[VTIME] = 7;
	t.c_cc[VINTR] = 2;
	cfsetispeed(&t, B9600);
	cfsetospeed(&t, B9600);
	if (tcsetattr(s, TCSANOW, &t))
		fr_die("tcsetattr");
	tcgetattr(s, &want);
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
