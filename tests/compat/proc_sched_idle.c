/* Scheduling policy SCHED_IDLE with priority 0 (set with sched_setscheduler on the process):
 * sched_getscheduler and sched_getparam read them back.
 * compat-object: scheduling policy SCHED_IDLE
 */
#include "common.h"

#include <sched.h>

static const char *check(void)
{
	static char why[64];
	struct sched_param sp;
	int p = sched_getscheduler(0);
	sched_getparam(0, &sp);
	if (p != SCHED_IDLE || sp.sched_priority != 0) {
		snprintf(why, sizeof(why), "policy %d prio %d want %d 0", p, sp.sched_priority, SCHED_IDLE);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	struct sched_param sp = {.sched_priority = 0};
	if (sched_setscheduler(0, SCHED_IDLE, &sp))
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
