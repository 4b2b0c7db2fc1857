/* The victim moved to its own process group (setpgid(0, 0)) without a new session: getpgrp() is
 * its pid and its session is the one it started in.
 * compat-object: process group leader in its parent's session (setpgid)
 */
#include "common.h"

static pid_t sid0;

static const char *check(void)
{
	static char why[64];
	if (getpgrp() != fr_pid0 || getsid(0) != sid0) {
		snprintf(why, sizeof(why), "pgrp %d sid %d, want %d %d", getpgrp(), getsid(0), fr_pid0, sid0);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	sid0 = getsid(0);
	if (setpgid(0, 0))
		fr_die("setpgid");
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
