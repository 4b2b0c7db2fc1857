/* A device node made in the state dir (a copy of /dev/null, mknod 1:3), opened and then removed:
 * the descriptor is still that device.
 * compat-object: deleted device node (the device opened again)
 */
#include "common.h"

#include <sys/sysmacros.h>

static int fd;

static void check(void)
{
	struct stat st;
	if (fstat(fd, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3)) {
		fr_status("BAD not the null device any more");
		return;
	}
	if (write(fd, "discard", 7) != 7) {
		fr_status("BAD write: %s", strerror(errno));
		return;
	}
	char b;
	if (read(fd, &b, 1) != 0) {
		fr_status("BAD read did not give end of file");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/mynull", fr_dir);
	if (mknod(p, S_IFCHR | 0666, makedev(1, 3)))
		fr_die("mknod");
	fd = open(p, O_RDWR);
	if (fd < 0 || unlink(p))
		fr_die("open");
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
