/* A pty in canonical mode with a partial line typed into it (no newline yet, one character
 * erased with VERASE): the slave has nothing to read; after the newline is typed it reads the
 * edited line "abd\n".
 * compat-object: pty canonical-mode partial line (line discipline edit buffer)
 */
#include "common.h"

#include <poll.h>
#include <termios.h>

static int m, s;
static int checks;

static void check(void)
{
	struct pollfd pf = {.fd = s, .events = POLLIN};
	if (poll(&pf, 1, 0) != 0) {
		fr_status("BAD the slave is readable before the line is complete");
		return;
	}
	if (checks++ == 0) {
		fr_status("ok (line pending)");
		return;
	}
	if (write(m, "\n", 1) != 1) {
		fr_status("BAD write");
		return;
	}
	char b[16];
	ssize_t n = poll(&pf, 1, 1000) == 1 ? read(s, b, sizeof(b)) : -1;
	if (n != 4 || memcmp(b, "abd\n", 4)) {
		fr_status("BAD line read %zd bytes '%.*s', want 'abd\\n'", n, n > 0 ? (int)n : 0, b);
		return;
	}
	/* Type the next partial line for a further check. */
	if (write(m, "abc\177d", 5) != 5)
		fr_die("write");
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
	t.c_lflag |= ICANON;
	t.c_lflag &= ~(tcflag_t)ECHO;
	t.c_cc[VERASE] = 0177;
	if (s < 0 || tcsetattr(s, TCSANOW, &t) || write(m, "abc\177d", 5) != 5)
		fr_die("setup");
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
