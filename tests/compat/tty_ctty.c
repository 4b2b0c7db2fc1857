/* The controlling terminal: the process calls setsid() and takes a pty slave as its controlling
 * terminal (TIOCSCTTY); it is the foreground group. /dev/tty opens to that pty (a byte written there reaches the master), tcgetsid and
 * tcgetpgrp name this process, and ^C typed on the master delivers SIGINT to it.
 * compat-object: controlling terminal (pty slave) of a session leader
 */
#include "common.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

static int m, s;
static volatile sig_atomic_t got_int;

static void on_int(int sig)
{
	(void)sig;
	got_int = 1;
}

static void check(void)
{
	if (tcgetsid(s) != getpid() || tcgetpgrp(s) != getpgrp() || getsid(0) != getpid()) {
		fr_status("BAD session %d / tty session %d / fg group %d, want %d", (int)getsid(0), (int)tcgetsid(s),
			  (int)tcgetpgrp(s), (int)getpid());
		return;
	}
	char b[4] = "";
	struct pollfd pf = {.fd = m, .events = POLLIN};
	/* The echo of the last check's ^C is still queued on the master: drain it first. */
	while (poll(&pf, 1, 0) == 1 && read(m, b, sizeof(b)) > 0)
		;
	int t = open("/dev/tty", O_RDWR | O_NOCTTY);
	int same = t >= 0 && write(t, "Z", 1) == 1 && poll(&pf, 1, 1000) == 1 && read(m, b, sizeof(b)) == 1 && b[0] == 'Z';
	if (t >= 0)
		close(t);
	if (!same) {
		fr_status("BAD /dev/tty: %s", t < 0 ? strerror(errno) : "not this pty (a byte written to it did not reach the master)");
		return;
	}
	got_int = 0;
	if (write(m, "\003", 1) != 1) {
		fr_status("BAD write ^C");
		return;
	}
	for (int i = 0; i < 100 && !got_int; i++)
		usleep(10000);
	if (!got_int) {
		fr_status("BAD ^C on the terminal did not send SIGINT");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGINT, on_int, SA_RESTART);
	if (setsid() < 0)
		fr_die("setsid");
	m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) || unlockpt(m))
		fr_die("openpt");
	s = open(ptsname(m), O_RDWR | O_NOCTTY);
	if (s < 0 || ioctl(s, TIOCSCTTY, 0))
		fr_die("TIOCSCTTY");
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
