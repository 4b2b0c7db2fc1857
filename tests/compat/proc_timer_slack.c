/* PR_SET_TIMERSLACK(123457 ns): PR_GET_TIMERSLACK reads it back.
 * compat-object: timer slack (PR_SET_TIMERSLACK)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != 123457)
		return "timer slack is not 123457 ns";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_TIMERSLACK, 123457, 0, 0, 0))
		fr_die("prctl(PR_SET_TIMERSLACK, 123457, 0, 0, 0)");
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
