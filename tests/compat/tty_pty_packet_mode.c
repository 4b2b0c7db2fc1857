/* A pty master in packet mode (TIOCPKT): TIOCGPKT says so, and data read from the master comes
 * with a leading TIOCPKT_DATA (0) byte.
 * compat-object: pty master in packet mode (TIOCPKT)
 */
#include "common.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

static int m, s;

static void check(void)
{
	int pkt = -1;
	if (ioctl(m, TIOCGPKT, &pkt) || pkt != 1) {
		fr_status("BAD TIOCGPKT %d", pkt);
		return;
	}
	if (write(s, "P", 1) != 1) {
		fr_status("BAD write");
		return;
	}
	char b[8];
	struct pollfd pf = {.fd = m, .events = POLLIN};
	ssize_t n = poll(&pf, 1, 1000) == 1 ? read(m, b, sizeof(b)) : -1;
	if (n != 2 || b[0] != TIOCPKT_DATA || b[1] != 'P') {
		fr_status("BAD packet read %zd bytes, first %d", n, n > 0 ? b[0] : -1);
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
	struct termios t;
	tcgetattr(s, &t);
	cfmakeraw(&t);
	int one = 1;
	if (s < 0 || tcsetattr(s, TCSANOW, &t) || ioctl(m, TIOCPKT, &one))
		fr_die("setup");
	/* Drain the status packet the mode change may have queued. */
	char b[8];
	fcntl(m, F_SETFL, O_NONBLOCK);
	while (read(m, b, sizeof(b)) > 0)
		;
	fcntl(m, F_SETFL, 0);
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
