/* Descriptors of /proc/self/... files opened by the process: /proc/self/status (reads show this
 * process: Pid: equals getpid()) and the /proc/self/fd directory (lists this process's fds).
 * compat-object: descriptors of /proc/self files
 */
#include "common.h"

static int st, dir;

static void check(void)
{
	char buf[4096];
	ssize_t n = pread(st, buf, sizeof(buf) - 1, 0);
	if (n <= 0) {
		fr_status("BAD read status: %s", strerror(errno));
		return;
	}
	buf[n] = 0;
	char *p = strstr(buf, "\nPid:");
	int pid = p ? atoi(p + 5) : -1;
	if (pid != getpid()) {
		fr_status("BAD /proc/self/status fd shows pid %d, not this process %d", pid, (int)getpid());
		return;
	}
	char name[16];
	snprintf(name, sizeof(name), "%d", st);
	struct stat sb;
	if (fstatat(dir, name, &sb, AT_SYMLINK_NOFOLLOW)) {
		fr_status("BAD the /proc/self/fd dir fd does not list fd %d: %s", st, strerror(errno));
		return;
	}
	char lnk[256];
	n = readlinkat(dir, name, lnk, sizeof(lnk) - 1);
	lnk[n < 0 ? 0 : n] = 0;
	char want[64];
	snprintf(want, sizeof(want), "/proc/%d/status", (int)getpid());
	if (strcmp(lnk, want)) {
		fr_status("BAD fd %d links to '%s', want '%s'", st, lnk, want);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	st = open("/proc/self/status", O_RDONLY);
	dir = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
	if (st < 0 || dir < 0)
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
