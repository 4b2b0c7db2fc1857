/* PR_SET_THP_DISABLE: PR_GET_THP_DISABLE reads 1.
 * compat-object: transparent huge pages disabled (PR_SET_THP_DISABLE)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
		return "PR_GET_THP_DISABLE is not 1";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		fr_die("prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)");
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
