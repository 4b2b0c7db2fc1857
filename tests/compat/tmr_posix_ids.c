/* Six POSIX timers created, the 2nd and 5th deleted: the four left answer timer_gettime under
 * the same ids with their own intervals, the deleted ids give EINVAL, and a new timer_create
 * does not hand out an id still in use.
 * compat-object: POSIX timer ids with holes
 * compat-libs: -lrt
 */
#include "common.h"

static timer_t t[6];

static const char *check(void)
{
	static char why[128];
	for (int i = 0; i < 6; i++) {
		struct itimerspec v;
		int r = timer_gettime(t[i], &v);
		if (i == 1 || i == 4) {
			if (r != -1 || errno != EINVAL) {
				snprintf(why, sizeof(why), "deleted timer %d (id %ld) exists", i, (long)t[i]);
				return why;
			}
			continue;
		}
		if (r || v.it_interval.tv_sec != 100 + i) {
			snprintf(why, sizeof(why), "timer %d (id %ld): %s interval %ld", i, (long)t[i],
				 r ? strerror(errno) : "ok", (long)v.it_interval.tv_sec);
			return why;
		}
	}
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_NONE;
	timer_t n;
	if (timer_create(CLOCK_MONOTONIC, &ev, &n))
		return "timer_create";
	for (int i = 0; i < 6; i++)
		if (i != 1 && i != 4 && n == t[i])
			return "a new timer got an id in use";
	timer_delete(n);
	return NULL;
}

static void setup(void)
{
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_NONE;
	for (int i = 0; i < 6; i++) {
		if (timer_create(i % 2 ? CLOCK_REALTIME : CLOCK_MONOTONIC, &ev, &t[i]))
			fr_die("timer_create");
		struct itimerspec v = {{100 + i, 0}, {1000, 0}};
		timer_settime(t[i], 0, &v, NULL);
	}
	timer_delete(t[1]);
	timer_delete(t[4]);
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
