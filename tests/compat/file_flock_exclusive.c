/* flock(LOCK_EX) held on one open file description: another description of the same file
 * (opened at check time) cannot take it (EWOULDBLOCK); the holder's dup can convert it.
 * compat-object: flock exclusive lock
 */
#include "common.h"

#include <sys/file.h>

static int fd;

static void check(void)
{
	int other = fr_open_in_dir("locked", O_RDONLY, 0);
	int r = flock(other, LOCK_EX | LOCK_NB), e = errno;
	int r2 = flock(other, LOCK_SH | LOCK_NB), e2 = errno;
	close(other);
	if (r == 0 || e != EWOULDBLOCK || r2 == 0 || e2 != EWOULDBLOCK) {
		fr_status("BAD another description could take the lock (ex %d sh %d): the flock is gone", r, r2);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("locked", O_RDWR | O_CREAT, 0644);
	if (flock(fd, LOCK_EX))
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
