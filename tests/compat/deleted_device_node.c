/* A character device node (/dev/urandom's 1:9) made in a private directory, opened, deleted.
 * compat-object: character device node deleted while open
 */
#include "common.h"
#include <sys/sysmacros.h>

static int fd;

static void check(void)
{
	struct stat st;
	unsigned char b[32] = {0}, z[32] = {0};
	if (fstat(fd, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 9) || st.st_nlink != 0 ||
	    (st.st_mode & 07777) != 0604) {
		fr_status("BAD stat: mode %o rdev %d:%d links %ld", st.st_mode, major(st.st_rdev), minor(st.st_rdev),
			  (long)st.st_nlink);
		return;
	}
	if (read(fd, b, sizeof(b)) != sizeof(b) || !memcmp(b, z, sizeof(b))) {
		fr_status("BAD read");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/urandom", fr_dir);
	if (mknod(p, S_IFCHR | 0600, makedev(1, 9)) || chmod(p, 0604))
		fr_die("mknod");
	fd = open(p, O_RDONLY);
	if (fd < 0 || unlink(p))
		fr_die("open");
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
