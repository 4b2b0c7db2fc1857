/* A file deleted while open: its mode, owner and its modification and access times.
 * compat-object: deleted file mode, owner, mtime and atime
 */
#include "common.h"

#include <sys/stat.h>

static int fd;

static void check(void)
{
	struct stat st;
	fstat(fd, &st);
	if ((st.st_mode & 07777) != 0640) {
		fr_status("BAD mode %o want 640", st.st_mode & 07777);
		return;
	}
	if (st.st_uid != 1234 || st.st_gid != 5678) {
		fr_status("BAD owner %d:%d want 1234:5678", st.st_uid, st.st_gid);
		return;
	}
	if (st.st_mtim.tv_sec != 1000000000 || st.st_mtim.tv_nsec != 123456789) {
		fr_status("BAD mtime %lld.%09ld want 1000000000.123456789", (long long)st.st_mtim.tv_sec,
			  st.st_mtim.tv_nsec);
		return;
	}
	if (st.st_atim.tv_sec != 900000000) {
		fr_status("BAD atime %lld want 900000000", (long long)st.st_atim.tv_sec);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("gone", O_RDWR | O_CREAT | O_TRUNC | O_NOATIME, 0600);
	if (write(fd, "some bytes\n", 11) != 11 || fchown(fd, 1234, 5678) || fchmod(fd, 0640))
		fr_die("setup");
	struct timespec ts[2] = {{900000000, 0}, {1000000000, 123456789}};
	if (futimens(fd, ts))
		fr_die("futimens");
	char path[4096];
	snprintf(path, sizeof(path), "%s/gone", fr_dir);
	if (unlink(path))
		fr_die("unlink");
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
