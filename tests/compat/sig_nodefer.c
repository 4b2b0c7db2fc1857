/* SIGUSR2 with SA_NODEFER: the handler raises SIGUSR2 once more from inside itself and it runs
 * nested (depth 2), which it cannot without the flag.
 * compat-object: SA_NODEFER handler
 */
#include "common.h"

static volatile int depth, maxdepth;

static void h(int sig)
{
	(void)sig;
	depth++;
	if (depth > maxdepth)
		maxdepth = depth;
	if (depth == 1)
		raise(SIGUSR2);
	depth--;
}

static const char *check(void)
{
	struct sigaction sa;
	sigaction(SIGUSR2, NULL, &sa);
	if (!(sa.sa_flags & SA_NODEFER))
		return "SA_NODEFER is not set";
	maxdepth = 0;
	raise(SIGUSR2);
	if (maxdepth != 2)
		return "the handler did not nest";
	return NULL;
}

static void setup(void)
{
	fr_install(SIGUSR2, h, SA_NODEFER);
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
