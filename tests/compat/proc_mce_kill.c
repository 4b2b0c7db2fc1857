/* PR_MCE_KILL_SET(EARLY): PR_MCE_KILL_GET reads it back.
 * compat-object: machine-check kill policy (PR_MCE_KILL_EARLY)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	if (prctl(PR_MCE_KILL_GET, 0, 0, 0, 0) != PR_MCE_KILL_EARLY)
		return "PR_MCE_KILL_GET is not EARLY";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0))
		fr_die("prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0)");
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
