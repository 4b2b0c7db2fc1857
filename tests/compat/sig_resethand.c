/* SIGUSR2 with SA_RESETHAND|SA_SIGINFO, never delivered: sigaction still shows the handler and
 * both flags (a delivery would reset it, so the check only reads it).
 * compat-object: SA_RESETHAND handler (not yet delivered)
 */
#include "common.h"

static void h(int sig, siginfo_t *si, void *c)
{
	(void)sig;
	(void)si;
	(void)c;
}

static const char *check(void)
{
	struct sigaction sa;
	sigaction(SIGUSR2, NULL, &sa);
	if (sa.sa_sigaction != h || !(sa.sa_flags & SA_RESETHAND) || !(sa.sa_flags & SA_SIGINFO))
		return "the SA_RESETHAND action differs";
	return NULL;
}

static void setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = h;
	sa.sa_flags = SA_RESETHAND | SA_SIGINFO;
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
