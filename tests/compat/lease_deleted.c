/* A write lease on a file deleted while open (refused at dump: reading the file to carry it
 * would break the lease).
 * compat-object: file lease on a file deleted while open
 * compat-refuse: a write lease on
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
	char p[4096];
	snprintf(p, sizeof(p), "%s/leased", fr_dir);
	fd = open(p, O_RDWR | O_CREAT, 0600);
	if (fd < 0 || write(fd, "data", 4) != 4 || fcntl(fd, F_SETLEASE, F_WRLCK) || unlink(p))
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
