/* The victim made itself a session and process-group leader (setsid): getsid(0) and getpgrp()
 * are its own pid.
 * compat-object: session leader (setsid)
 */
#include "common.h"

static const char *check(void)
{
	static char why[64];
	if (getsid(0) != fr_pid0 || getpgrp() != fr_pid0) {
		snprintf(why, sizeof(why), "sid %d pgrp %d, want %d", getsid(0), getpgrp(), fr_pid0);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	if (getpgrp() == getpid())
		fr_die("already a group leader");
	if (setsid() < 0)
		fr_die("setsid");
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
