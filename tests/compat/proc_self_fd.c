/* Descriptors of /proc/self paths: they must read the restored process, not another.
 * compat-object: descriptors of /proc/self files (status, a directory)
 */
#include "common.h"

static int status_fd, dir_fd;

static void check(void)
{
	char buf[4096];
	ssize_t n = pread(status_fd, buf, sizeof(buf) - 1, 0);
	buf[n < 0 ? 0 : n] = 0;
	char want[64];
	snprintf(want, sizeof(want), "\nPid:\t%d\n", (int)getpid());
	if (!strstr(buf, want)) {
		fr_status("BAD /proc/self/status read through the fd is another process's");
		return;
	}
	int fd = openat(dir_fd, "stat", O_RDONLY);
	n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n < 0 ? 0 : n] = 0;
	if (n <= 0 || atoi(buf) != getpid()) {
		fr_status("BAD stat through the /proc/self directory fd names pid %d", atoi(buf));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	status_fd = open("/proc/self/status", O_RDONLY);
	dir_fd = open("/proc/self", O_RDONLY | O_DIRECTORY);
	if (status_fd < 0 || dir_fd < 0)
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
