/* SIGCHLD with SA_NOCLDWAIT: children are reaped by the kernel (wait for them fails with
 * ECHILD once they are gone).
 * compat-object: SA_NOCLDWAIT (auto-reaped children)
 */
#include "common.h"

#include <sys/wait.h>

static const char *check(void)
{
	struct sigaction sa;
	sigaction(SIGCHLD, NULL, &sa);
	if (!(sa.sa_flags & SA_NOCLDWAIT))
		return "SA_NOCLDWAIT is not set";
	pid_t c = fork();
	if (c == 0)
		_exit(3);
	int st;
	pid_t r = waitpid(c, &st, 0);
	if (r != -1 || errno != ECHILD)
		return "the child became a zombie to wait for";
	return NULL;
}

static void setup(void)
{
	fr_install(SIGCHLD, SIG_DFL, SA_NOCLDWAIT);
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
