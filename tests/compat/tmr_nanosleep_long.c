/* A worker in one nanosleep(2 s) after another: each check waits for the sleep in progress to
 * end; every sleep lasted at least 2 s of monotonic time (one cut short by the restore shows),
 * and none much more than 2 s plus a restore (one restarted from the full 2 s after a long
 * freeze, or lost, shows).
 * compat-object: nanosleep in progress (relative, restarted with the time left)
 */
#include "common.h"

#include <pthread.h>

static volatile double shortest = 1e9, longest;
static volatile int done;

static void *worker(void *a)
{
	(void)a;
	for (;;) {
		double t0 = fr_now();
		struct timespec d = {2, 0};
		while (nanosleep(&d, &d) && errno == EINTR)
			;
		double took = fr_now() - t0;
		if (took < shortest)
			shortest = took;
		if (took > longest)
			longest = took;
		done++;
	}
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	int before = done;
	double t0 = fr_now();
	while (done == before && fr_now() - t0 < 6.0)
		usleep(5000);
	if (done == before)
		return "the sleep in progress did not end within 6 s";
	if (shortest < 2.0) {
		snprintf(why, sizeof(why), "a 2 s nanosleep lasted %.3f s", shortest);
		return why;
	}
	/* The dump and restore take a second or two at most. */
	if (longest > 5.0) {
		snprintf(why, sizeof(why), "a 2 s nanosleep lasted %.3f s", longest);
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
