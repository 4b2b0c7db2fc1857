/* A POSIX timer with SIGEV_NONE, one-shot 1 hour ahead on CLOCK_MONOTONIC, interval 0, and a second
 * one with an absolute CLOCK_REALTIME deadline 2 hours ahead (TIMER_ABSTIME): the time left on
 * each matches the deadline (it counts down through the dump, it is not re-armed from the value
 * left at dump time).
 * compat-object: POSIX timer with SIGEV_NONE (relative and absolute)
 * compat-libs: -lrt
 */
#include "common.h"

static timer_t rel, abst;
static double rel_deadline; /* monotonic */
static struct timespec abs_at;

static double ts(struct timespec t)
{
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static const char *check(void)
{
	static char why[160];
	struct itimerspec v;
	if (timer_gettime(rel, &v))
		return "timer_gettime(rel)";
	double left = ts(v.it_value), want = rel_deadline - fr_now();
	if (ts(v.it_interval) != 0 || left > want + 0.05 || left < want - 0.05) {
		snprintf(why, sizeof(why), "relative timer: %.3f s left, want %.3f s", left, want);
		return why;
	}
	if (timer_gettime(abst, &v))
		return "timer_gettime(abs)";
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	left = ts(v.it_value);
	want = ts(abs_at) - ts(now);
	if (left > want + 0.05 || left < want - 0.05) {
		snprintf(why, sizeof(why), "absolute timer: %.3f s left, want %.3f s", left, want);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_NONE;
	if (timer_create(CLOCK_MONOTONIC, &ev, &rel) || timer_create(CLOCK_REALTIME, &ev, &abst))
		fr_die("timer_create");
	struct itimerspec v = {{0, 0}, {3600, 0}};
	rel_deadline = fr_now() + 3600;
	timer_settime(rel, 0, &v, NULL);
	clock_gettime(CLOCK_REALTIME, &abs_at);
	abs_at.tv_sec += 7200;
	v.it_value = abs_at;
	timer_settime(abst, TIMER_ABSTIME, &v, NULL);
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
