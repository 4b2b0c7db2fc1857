/* A file written in a directory of its own, then the file and its directory removed while the
 * file stays open (a job's log in a directory cleaned up meanwhile): its contents, offset and
 * the name /proc shows for it ("DIR/log (deleted)") come back; the directory does not.
 * compat-object: file deleted while open, in a directory removed since
 */
#include "common.h"

static int fd;
static char dir[4096], path[4200];

static void check(void)
{
	struct stat st;
	char link[64], target[4400], want[4300], b[16] = {0};
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	target[n < 0 ? 0 : n] = 0;
	snprintf(want, sizeof(want), "%s (deleted)", path);
	if (strcmp(target, want)) {
		fr_status("BAD /proc name %s, not %s", target, want);
		return;
	}
	if (fstat(fd, &st) || st.st_nlink != 0 || st.st_size != 11) {
		fr_status("BAD stat: links %ld size %ld", (long)st.st_nlink, (long)st.st_size);
		return;
	}
	if (lseek(fd, 0, SEEK_CUR) != 11 || pread(fd, b, 11, 0) != 11 || strcmp(b, "job output\n")) {
		fr_status("BAD offset or contents %s", b);
		return;
	}
	if (access(dir, F_OK) == 0) {
		fr_status("BAD directory %s is back", dir);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	snprintf(dir, sizeof(dir), "%s/logs", fr_dir);
	snprintf(path, sizeof(path), "%s/log", dir);
	if (mkdir(dir, 0755))
		fr_die("mkdir");
	fd = open(path, O_RDWR | O_CREAT, 0640);
	if (fd < 0 || write(fd, "job output\n", 11) != 11)
		fr_die("open");
	if (unlink(path) || rmdir(dir))
		fr_die("unlink");
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
