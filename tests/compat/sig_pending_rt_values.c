/* Real-time signals queued with values while blocked: SIGRTMIN+1 three times (11, 22, 33) and
 * SIGRTMIN+2 once (44): the check takes them with sigtimedwait (order, values, si_code, si_pid)
 * and queues them again the same way.
 * compat-object: queued real-time signals with values
 */
#include "common.h"

static void queue_them(void)
{
	sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 11});
	sigqueue(getpid(), SIGRTMIN + 2, (union sigval){.sival_int = 44});
	sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 22});
	sigqueue(getpid(), SIGRTMIN + 1, (union sigval){.sival_int = 33});
}

static const char *check(void)
{
	static char why[128];
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 1);
	sigaddset(&s, SIGRTMIN + 2);
	struct timespec z = {0, 0};
	siginfo_t si[5];
	int n = 0;
	while (n < 5 && sigtimedwait(&s, &si[n], &z) > 0)
		n++;
	queue_them();
	static const int sig[4] = {1, 1, 1, 2}, val[4] = {11, 22, 33, 44};
	if (n != 4) {
		snprintf(why, sizeof(why), "%d signals pending, want 4", n);
		return why;
	}
	for (int i = 0; i < 4; i++)
		if (si[i].si_signo != SIGRTMIN + sig[i] || si[i].si_value.sival_int != val[i] ||
		    si[i].si_code != SI_QUEUE || si[i].si_pid != fr_pid0) {
			snprintf(why, sizeof(why), "signal %d: signo %d value %d code %d pid %d", i,
				 si[i].si_signo, si[i].si_value.sival_int, si[i].si_code, si[i].si_pid);
			return why;
		}
	return NULL;
}

static void setup(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 1);
	sigaddset(&s, SIGRTMIN + 2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	queue_them();
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
