/* A pty pair with a window size set (33 rows, 111 columns, 800x600 pixels): both ends report it.
 * compat-object: pty window size (TIOCSWINSZ)
 */
#include "common.h"

#include <sys/ioctl.h>

static int m, s;

static void check(void)
{
	struct winsize a, b;
	if (ioctl(m, TIOCGWINSZ, &a) || ioctl(s, TIOCGWINSZ, &b)) {
		fr_status("BAD TIOCGWINSZ: %s", strerror(errno));
		return;
	}
	if (a.ws_row != 33 || a.ws_col != 111 || a.ws_xpixel != 800 || a.ws_ypixel != 600 || memcmp(&a, &b, sizeof(a))) {
		fr_status("BAD window %ux%u (%ux%u px), want 33x111 (800x600)", a.ws_row, a.ws_col, a.ws_xpixel, a.ws_ypixel);
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
	struct winsize w = {.ws_row = 33, .ws_col = 111, .ws_xpixel = 800, .ws_ypixel = 600};
	if (s < 0 || ioctl(m, TIOCSWINSZ, &w))
		fr_die("winsize");
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
