/* The main thread's blocked mask: SIGUSR2, SIGWINCH, SIGALRM, SIGRTMIN+1 and SIGRTMAX blocked:
 * sigprocmask and the SigBlk line read it back (SIGUSR1 not blocked).
 * compat-object: blocked signal mask
 */
#include "common.h"

static sigset_t want;

static const char *check(void)
{
	sigset_t cur;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP && sigismember(&cur, s) != sigismember(&want, s))
			return "the blocked mask differs";
	return NULL;
}

static void setup(void)
{
	sigemptyset(&want);
	sigaddset(&want, SIGUSR2);
	sigaddset(&want, SIGWINCH);
	sigaddset(&want, SIGALRM);
	sigaddset(&want, SIGRTMIN + 1);
	sigaddset(&want, SIGRTMAX);
	sigprocmask(SIG_SETMASK, &want, NULL);
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
