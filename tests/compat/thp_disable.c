/* thp_disable STATEDIR
 *
 * compat-object: prctl(PR_SET_THP_DISABLE) of the process
 *
 * Disables transparent huge pages for the whole process; check() reads PR_GET_THP_DISABLE
 * back and the "THP_enabled:" line of /proc/self/status (when the kernel shows it).
 */
#include "common.h"
#include <sys/prctl.h>

static void check(void)
{
	int v = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	if (v != 1)
		return fr_status("BAD PR_GET_THP_DISABLE is %d, not 1", v);
	char buf[8192];
	int fd = open("/proc/self/status", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n < 0 ? 0 : n] = 0;
	char *line = strstr(buf, "THP_enabled:");
	if (line && atoi(line + strlen("THP_enabled:")) != 0)
		return fr_status("BAD /proc/self/status says THP_enabled: 1");
	if (getpid() != fr_pid0)
		return fr_status("BAD pid %d, was %d", (int)getpid(), (int)fr_pid0);
	fr_status("ok thp_disable=%d", v);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		fr_die("PR_SET_THP_DISABLE");
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
