/* SIGUSR2 handled with SA_SIGINFO|SA_RESTART and SIGWINCH, SIGRTMIN in its sa_mask: sigaction
 * reads back handler, flags and mask; sigqueue(SIGUSR2, 4242) reaches the handler with
 * si_code SI_QUEUE, si_pid, si_value, and the mask applied while it ran.
 * compat-object: SA_SIGINFO handler with sa_mask
 */
#include "common.h"

static volatile int got, val, code, pidv, masked;

static void h(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	sigset_t cur;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	masked = sigismember(&cur, SIGWINCH) && sigismember(&cur, SIGRTMIN) && sigismember(&cur, SIGUSR2);
	got++;
	val = si->si_value.sival_int;
	code = si->si_code;
	pidv = si->si_pid;
}

static const char *check(void)
{
	struct sigaction sa;
	sigaction(SIGUSR2, NULL, &sa);
	if (sa.sa_sigaction != h || (sa.sa_flags & (SA_SIGINFO | SA_RESTART)) != (SA_SIGINFO | SA_RESTART) ||
	    !sigismember(&sa.sa_mask, SIGWINCH) || !sigismember(&sa.sa_mask, SIGRTMIN) ||
	    sigismember(&sa.sa_mask, SIGINT))
		return "the SIGUSR2 action differs";
	int before = got;
	sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 4242});
	if (got != before + 1 || val != 4242 || code != SI_QUEUE || pidv != getpid())
		return "the handler did not get the queued signal with its siginfo";
	if (!masked)
		return "sa_mask was not applied while the handler ran";
	return NULL;
}

static void setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = h;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGWINCH);
	sigaddset(&sa.sa_mask, SIGRTMIN);
	sigaction(SIGUSR2, &sa, NULL);
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
