/* SCHED_RR priority 2 with SCHED_RESET_ON_FORK: the flag is still set and a forked child starts
 * with SCHED_OTHER.
 * compat-object: SCHED_RESET_ON_FORK flag
 */
#include "common.h"

#include <sched.h>
#include <sys/wait.h>

static const char *check(void)
{
	static char why[64];
	int p = sched_getscheduler(0);
	if (p != (SCHED_RR | SCHED_RESET_ON_FORK)) {
		snprintf(why, sizeof(why), "policy %#x want RR|RESET_ON_FORK", p);
		return why;
	}
	pid_t c = fork();
	if (c == 0)
		_exit(sched_getscheduler(0) == SCHED_OTHER ? 0 : 1);
	int st;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return "the child did not start with SCHED_OTHER";
	return NULL;
}

static void setup(void)
{
	struct sched_param sp = {.sched_priority = 2};
	if (sched_setscheduler(0, SCHED_RR | SCHED_RESET_ON_FORK, &sp))
		fr_die("sched_setscheduler");
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
