/* A write lease (F_SETLEASE F_WRLCK) on a file open for writing: F_GETLEASE reports it.
 * compat-object: file write lease
 */
#include "common.h"

static int fd;

static void check(void)
{
	int l = fcntl(fd, F_GETLEASE);
	if (l != F_WRLCK) {
		fr_status("BAD F_GETLEASE %d want F_WRLCK (%d)", l, F_WRLCK);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	signal(SIGIO, SIG_IGN);
	fd = fr_open_in_dir("leased", O_WRONLY | O_CREAT, 0644);
	if (fcntl(fd, F_SETLEASE, F_WRLCK))
		fr_die("F_SETLEASE");
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
