/* alarm(3600) pending (SIGALRM default action would kill): the time left (getitimer) is still
 * below 3600 s and close to what elapsed since it was set (monotonic), not re-armed from scratch.
 * compat-object: long one-shot alarm()
 */
#include "common.h"

#include <sys/time.h>

static double set_at;

static const char *check(void)
{
	static char why[128];
	struct itimerval v;
	getitimer(ITIMER_REAL, &v);
	double left = v.it_value.tv_sec + v.it_value.tv_usec / 1e6;
	double want = 3600 - (fr_now() - set_at);
	if (v.it_interval.tv_sec || v.it_interval.tv_usec || left < want - 1.0 || left > want + 0.1) {
		snprintf(why, sizeof(why), "alarm left %.3f s, want %.3f s", left, want);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	set_at = fr_now();
	alarm(3600);
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
