/* A worker sleeping in clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) to deadlines 150 ms apart:
 * it never wakes before its deadline (a restart with a relative time would), and it keeps
 * waking (the deadline it last reached is recent).
 * compat-object: clock_nanosleep with an absolute deadline (restarted)
 */
#include "common.h"

#include <pthread.h>

static volatile double early, last_wake, last_deadline;
static volatile int wakes;

static void *worker(void *a)
{
	(void)a;
	struct timespec d;
	clock_gettime(CLOCK_MONOTONIC, &d);
	for (;;) {
		d.tv_nsec += 150000000;
		if (d.tv_nsec >= 1000000000) {
			d.tv_nsec -= 1000000000;
			d.tv_sec++;
		}
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &d, NULL) == EINTR)
			;
		double now = fr_now(), dl = (double)d.tv_sec + d.tv_nsec / 1e9;
		if (now < dl && dl - now > early)
			early = dl - now;
		last_wake = now;
		last_deadline = dl;
		wakes++;
	}
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	int before = wakes;
	double t0 = fr_now();
	while (wakes < before + 2 && fr_now() - t0 < 2.0)
		usleep(5000);
	if (wakes < before + 2)
		return "the sleeper stopped waking";
	if (early > 0) {
		snprintf(why, sizeof(why), "woke %.3f s before its deadline", early);
		return why;
	}
	if (last_wake - last_deadline > 0.1) {
		snprintf(why, sizeof(why), "woke %.3f s after its deadline", last_wake - last_deadline);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
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
