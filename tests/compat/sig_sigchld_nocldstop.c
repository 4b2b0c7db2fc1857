/* SIGCHLD handled with SA_NOCLDSTOP|SA_SIGINFO: a child that exits with 7 brings the handler
 * (CLD_EXITED, status 7, its pid); a child stopped then killed brings no CLD_STOPPED.
 * compat-object: SIGCHLD handler with SA_NOCLDSTOP
 */
#include "common.h"

#include <sys/wait.h>

static volatile int got, code, status, stopped;
static volatile pid_t from;

static void h(int sig, siginfo_t *si, void *c)
{
	(void)sig;
	(void)c;
	if (si->si_code == CLD_STOPPED)
		stopped++;
	got++;
	code = si->si_code;
	status = si->si_status;
	from = si->si_pid;
}

static const char *check(void)
{
	struct sigaction sa;
	sigaction(SIGCHLD, NULL, &sa);
	if (sa.sa_sigaction != h || !(sa.sa_flags & SA_NOCLDSTOP))
		return "the SIGCHLD action differs";
	got = 0;
	pid_t c = fork();
	if (c == 0)
		_exit(7);
	for (int i = 0; i < 300 && !got; i++)
		usleep(2000);
	waitpid(c, NULL, 0);
	if (!got || code != CLD_EXITED || status != 7 || from != c)
		return "no SIGCHLD with CLD_EXITED 7 from the child";
	stopped = 0;
	c = fork();
	if (c == 0)
		for (;;)
			pause();
	kill(c, SIGSTOP);
	int st;
	waitpid(c, &st, WUNTRACED);
	usleep(20000);
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	if (stopped)
		return "SIGCHLD came for a stop despite SA_NOCLDSTOP";
	return NULL;
}

static void setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = h;
	sa.sa_flags = SA_NOCLDSTOP | SA_SIGINFO | SA_RESTART;
	sigaction(SIGCHLD, &sa, NULL);
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
