/* nice value 7 (setpriority): getpriority and /proc/self/stat agree.
 * compat-object: nice value
 */
#include "common.h"

#include <sys/resource.h>

static const char *check(void)
{
	static char why[64];
	errno = 0;
	int n = getpriority(PRIO_PROCESS, 0);
	if (n != 7 || errno) {
		snprintf(why, sizeof(why), "nice %d want 7", n);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	if (setpriority(PRIO_PROCESS, 0, 7))
		fr_die("setpriority");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	setup();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "getpid() changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
