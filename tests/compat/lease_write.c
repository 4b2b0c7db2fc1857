/* A write lease (F_SETLEASE F_WRLCK) on a file only this process has open.
 * compat-object: file lease (write)
 */
#include "common.h"

static int fd;

static void check(void)
{
	int l = fcntl(fd, F_GETLEASE);
	if (l != F_WRLCK) {
		fr_status("BAD lease %d", l);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("leased", O_RDWR | O_CREAT, 0600);
	if (fd < 0 || fcntl(fd, F_SETLEASE, F_WRLCK))
		fr_die("F_SETLEASE");
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
