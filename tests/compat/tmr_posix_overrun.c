/* A POSIX timer every 1 ms whose signal (SIGRTMIN+3) stays blocked: each check takes the one
 * queued signal (sigtimedwait) and timer_getoverrun counts the expirations missed while it was
 * queued: at most the milliseconds elapsed since the previous check (+50%), and, when that is
 * 200 ms or more, at least 50 (a runner waits 300 ms between its check and the dump, so even a
 * restore that does not count the time frozen has that many to carry).
 * compat-object: POSIX timer overrun count
 * compat-libs: -lrt
 */
#include "common.h"

static timer_t tm;
static double last;

static const char *check(void)
{
	static char why[160];
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 3);
	struct timespec z = {1, 0};
	siginfo_t si;
	if (sigtimedwait(&s, &si, &z) != SIGRTMIN + 3)
		return "no timer signal pending";
	int ov = timer_getoverrun(tm);
	double now = fr_now(), want = (now - last) * 1000 - 1;
	last = now;
	if (si.si_code != SI_TIMER || si.si_overrun != ov)
		return "siginfo differs from timer_getoverrun";
	if ((want >= 200 && ov < 50) || ov > want * 1.5 + 5) {
		snprintf(why, sizeof(why), "overrun %d, want about %.0f", ov, want);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 3);
	sigprocmask(SIG_BLOCK, &s, NULL);
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN + 3;
	if (timer_create(CLOCK_MONOTONIC, &ev, &tm))
		fr_die("timer_create");
	struct itimerspec v = {{0, 1000000}, {0, 1000000}};
	last = fr_now();
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
