/* The working directory removed while the process is in it.
 * compat-object: working directory removed (cwd of a deleted directory)
 */
#include "common.h"
#include <sys/syscall.h>

static void check(void)
{
	struct stat st;
	char buf[4096];
	if (stat(".", &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0 || (st.st_mode & 07777) != 0751) {
		fr_status("BAD cwd: mode %o links %ld", st.st_mode, (long)st.st_nlink);
		return;
	}
	/* getcwd fails on a removed directory; /proc shows its old name. */
	long n = syscall(SYS_getcwd, buf, sizeof(buf));
	if (n >= 0 || errno != ENOENT) {
		fr_status("BAD getcwd %s", n > 0 ? buf : strerror(errno));
		return;
	}
	n = readlink("/proc/self/cwd", buf, sizeof(buf) - 1);
	buf[n < 0 ? 0 : n] = 0;
	if (n <= 0 || !strstr(buf, "/wd (deleted)")) {
		fr_status("BAD /proc/self/cwd is %s", buf);
		return;
	}
	if (open("x", O_CREAT | O_WRONLY, 0600) >= 0 || errno != ENOENT) {
		fr_status("BAD creating in the removed directory: %s", strerror(errno));
		return;
	}
	fr_status("ok %s", buf);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/wd", fr_dir);
	if (mkdir(p, 0700) || chmod(p, 0751) || chdir(p) || rmdir(p))
		fr_die("setup");
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
