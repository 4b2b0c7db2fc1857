/* A POSIX timer with SIGEV_THREAD (glibc runs the callback on its helper thread, which waits
 * for the timer's signal), every 30 ms: the callback keeps running with its sival_ptr.
 * compat-object: POSIX timer with SIGEV_THREAD (glibc helper thread)
 * compat-libs: -lrt
 */
#include "common.h"

static timer_t tm;
static volatile int fired;
static int cookie = 5150;
static volatile int bad_ptr;

static void cb(union sigval v)
{
	if (v.sival_ptr != &cookie)
		bad_ptr = 1;
	__atomic_add_fetch(&fired, 1, __ATOMIC_SEQ_CST);
}

static const char *check(void)
{
	static char why[64];
	int before = fired;
	double t0 = fr_now();
	while (fired < before + 3 && fr_now() - t0 < 2.0)
		usleep(5000);
	if (fired < before + 3) {
		snprintf(why, sizeof(why), "%d callbacks in 2 s", fired - before);
		return why;
	}
	if (bad_ptr)
		return "the callback got another sival_ptr";
	return NULL;
}

static void setup(void)
{
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD;
	ev.sigev_notify_function = cb;
	ev.sigev_value.sival_ptr = &cookie;
	if (timer_create(CLOCK_MONOTONIC, &ev, &tm))
		fr_die("timer_create");
	struct itimerspec v = {{0, 30000000}, {0, 30000000}};
	timer_settime(tm, 0, &v, NULL);
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
