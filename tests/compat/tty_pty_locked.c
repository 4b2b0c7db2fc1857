/* Two pty masters: one never unlocked (TIOCGPTLCK 1, opening its slave fails with EIO), one
 * unlocked with no slave open (its slave can be opened by name; the pty number is unchanged).
 * compat-object: pty lock state (unlockpt) and a master without an open slave
 */
#include "common.h"

#include <sys/ioctl.h>

static int locked, unlocked;
static int n_unlocked;

static void check(void)
{
	int l1 = -1, l2 = -1, n = -1;
	ioctl(locked, TIOCGPTLCK, &l1);
	ioctl(unlocked, TIOCGPTLCK, &l2);
	ioctl(unlocked, TIOCGPTN, &n);
	if (l1 != 1 || l2 != 0) {
		fr_status("BAD lock states %d/%d want 1/0", l1, l2);
		return;
	}
	if (n != n_unlocked) {
		fr_status("BAD pty number %d want %d", n, n_unlocked);
		return;
	}
	int s = ioctl(locked, TIOCGPTPEER, O_RDWR | O_NOCTTY);
	if (s >= 0 || errno != EIO) {
		fr_status("BAD the locked pty's slave opened (%s)", s >= 0 ? "yes" : strerror(errno));
		if (s >= 0)
			close(s);
		return;
	}
	s = ioctl(unlocked, TIOCGPTPEER, O_RDWR | O_NOCTTY);
	if (s < 0) {
		fr_status("BAD the unlocked pty's slave cannot be opened: %s", strerror(errno));
		return;
	}
	close(s);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	locked = posix_openpt(O_RDWR | O_NOCTTY);
	unlocked = posix_openpt(O_RDWR | O_NOCTTY);
	if (locked < 0 || unlocked < 0 || unlockpt(unlocked) || ioctl(unlocked, TIOCGPTN, &n_unlocked))
		fr_die("openpt");
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
