/* PR_SET_KEEPCAPS(1): PR_GET_KEEPCAPS reads it back.
 * compat-object: keep capabilities (PR_SET_KEEPCAPS)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	if (prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0) != 1)
		return "PR_GET_KEEPCAPS is not 1";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		fr_die("prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0)");
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
