/* PR_SET_CHILD_SUBREAPER: PR_GET_CHILD_SUBREAPER reads it back.
 * compat-object: child subreaper (PR_SET_CHILD_SUBREAPER)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	int s = 0;
	prctl(PR_GET_CHILD_SUBREAPER, &s, 0, 0, 0);
	if (s != 1)
		return "PR_GET_CHILD_SUBREAPER is not 1";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		fr_die("prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)");
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
