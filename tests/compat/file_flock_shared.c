/* flock(LOCK_SH) held: another description can share it but not take it exclusively.
 * compat-object: flock shared lock
 */
#include "common.h"

#include <sys/file.h>

static int fd;

static void check(void)
{
	int other = fr_open_in_dir("locked", O_RDONLY, 0);
	int ex = flock(other, LOCK_EX | LOCK_NB), e = errno;
	int sh = flock(other, LOCK_SH | LOCK_NB);
	close(other);
	if (ex == 0 || e != EWOULDBLOCK) {
		fr_status("BAD an exclusive flock was possible: the shared lock is gone");
		return;
	}
	if (sh != 0) {
		fr_status("BAD a shared flock was refused: the lock came back exclusive");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("locked", O_RDONLY | O_CREAT, 0644);
	if (flock(fd, LOCK_SH))
		fr_die("flock");
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
