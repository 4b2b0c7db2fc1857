/* A directory removed while open: still a directory, empty, its mode kept; fchdir works.
 * compat-object: directory removed while open
 */
#include "common.h"
#include <dirent.h>
#include <sys/syscall.h>

static int fd;

static void check(void)
{
	struct stat st;
	if (fstat(fd, &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0 || (st.st_mode & 07777) != 0751) {
		fr_status("BAD stat: mode %o links %ld", st.st_mode, (long)st.st_nlink);
		return;
	}
	/* A removed directory lists nothing; creating in it fails with ENOENT. */
	if (openat(fd, "x", O_CREAT | O_WRONLY, 0600) >= 0 || errno != ENOENT) {
		fr_status("BAD create in it: %s", strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/d", fr_dir);
	if (mkdir(p, 0700) || chmod(p, 0751))
		fr_die("mkdir");
	fd = open(p, O_RDONLY | O_DIRECTORY);
	if (fd < 0 || rmdir(p))
		fr_die("rmdir");
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
