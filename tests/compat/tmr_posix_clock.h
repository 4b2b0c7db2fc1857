/* The body shared by the victims of a POSIX timer on one clock with SIGEV_SIGNAL (SIGRTMIN+1,
 * sival 7001), every 25 ms: timer_gettime reads the interval back, and the handler keeps getting
 * the signal with si_code SI_TIMER, the value and the timer's id. The including victim defines
 * TIMER_CLOCK (CLOCK_REALTIME, …).
 */
#include "common.h"

static timer_t tid;
static volatile int fired, val, code, tmid;

static void h(int s, siginfo_t *si, void *c)
{
	(void)s;
	(void)c;
	fired++;
	val = si->si_value.sival_int;
	code = si->si_code;
	tmid = si->si_timerid;
}

static const char *check(void)
{
	static char why[128];
	struct itimerspec v;
	if (timer_gettime(tid, &v)) {
		snprintf(why, sizeof(why), "timer_gettime: %s", strerror(errno));
		return why;
	}
	if (v.it_interval.tv_sec || v.it_interval.tv_nsec != 25000000 || (!v.it_value.tv_sec && !v.it_value.tv_nsec))
		return "interval differs or the timer is disarmed";
	int before = fired;
	double t0 = fr_now();
	while (fired < before + 3 && fr_now() - t0 < 2.0)
		usleep(5000);
	if (fired < before + 3) {
		snprintf(why, sizeof(why), "%d expirations in 2 s", fired - before);
		return why;
	}
	if (val != 7001 || code != SI_TIMER || tmid != (int)(long)tid) {
		snprintf(why, sizeof(why), "siginfo value %d code %d timerid %d (want %d)", val, code, tmid, (int)(long)tid);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = h;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN + 1, &sa, NULL);
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 1;
	ev.sigev_value.sival_int = 7001;
	if (timer_create(TIMER_CLOCK, &ev, &tid))
		fr_die("timer_create");
	struct itimerspec v = {{0, 25000000}, {0, 25000000}};
	timer_settime(tid, 0, &v, NULL);
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
