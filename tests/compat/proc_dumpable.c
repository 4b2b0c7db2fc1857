/* PR_SET_DUMPABLE(0): PR_GET_DUMPABLE reads 0 (and ferry, as root, can still dump it).
 * compat-object: dumpable flag cleared (PR_SET_DUMPABLE 0)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
		return "the process is dumpable again";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		fr_die("prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)");
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
