/* A directory held open after it was removed (rmdir): still a directory, nlink 0, empty, and
 * creating a file in it fails with ENOENT.
 * compat-object: open directory that was removed
 */
#include "common.h"

static int fd;

static void check(void)
{
	struct stat st;
	if (fstat(fd, &st) || !S_ISDIR(st.st_mode)) {
		fr_status("BAD not a directory");
		return;
	}
	if (st.st_nlink != 0) {
		fr_status("BAD nlink %ld: the directory exists again", (long)st.st_nlink);
		return;
	}
	int f = openat(fd, "x", O_WRONLY | O_CREAT, 0644);
	if (f >= 0 || errno != ENOENT) {
		fr_status("BAD creating in the removed directory: %s", f >= 0 ? "worked" : strerror(errno));
		return;
	}
	char lnk[64], t[4200];
	snprintf(lnk, sizeof(lnk), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(lnk, t, sizeof(t) - 1);
	t[n < 0 ? 0 : n] = 0;
	if (!strstr(t, "/gonedir (deleted)")) {
		fr_status("BAD link '%s'", t);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/gonedir", fr_dir);
	mkdir(p, 0755);
	fd = open(p, O_RDONLY | O_DIRECTORY);
	if (fd < 0 || rmdir(p))
		fr_die("rmdir");
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
