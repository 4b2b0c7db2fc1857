/* ITIMER_VIRTUAL (user CPU time; the check spins): interval 20 ms, first expiry 20 ms; getitimer reads the interval back, the value left
 * is within it, and the handler of SIGVTALRM keeps running (at least 3 more times over CPU spent spinning).
 * compat-object: interval timer ITIMER_VIRTUAL
 */
#include "common.h"

#include <sys/time.h>

static volatile int fired;

static void h(int s)
{
	(void)s;
	fired++;
}

static const char *check(void)
{
	static char why[128];
	struct itimerval v;
	getitimer(ITIMER_VIRTUAL, &v);
	if (v.it_interval.tv_sec != 0 || v.it_interval.tv_usec != 20000) {
		snprintf(why, sizeof(why), "interval %ld.%06ld", (long)v.it_interval.tv_sec, (long)v.it_interval.tv_usec);
		return why;
	}
	if (v.it_value.tv_sec != 0 || v.it_value.tv_usec > 30000 ||
	    (v.it_value.tv_usec == 0 && v.it_value.tv_sec == 0)) {
		snprintf(why, sizeof(why), "value left %ld.%06ld: beyond the interval (+10 ms of tick rounding) or disarmed", (long)v.it_value.tv_sec, (long)v.it_value.tv_usec);
		return why;
	}
	int before = fired;
	double t0 = fr_now();
	struct timespec c0, c;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	volatile unsigned long spin = 0;
	do {
		spin++;
		clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c);
	} while (fired < before + 3 && fr_now() - t0 < 2.0);
	if (fired < before + 3) {
		snprintf(why, sizeof(why), "SIGVTALRM came %d times in 2 s", fired - before);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	fr_install(SIGVTALRM, h, SA_RESTART);
	struct itimerval v = {{0, 20000}, {0, 20000}};
	if (setitimer(ITIMER_VIRTUAL, &v, NULL))
		fr_die("setitimer");
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
