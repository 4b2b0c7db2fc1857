/* Signal-driven I/O on a pipe: O_ASYNC, F_SETOWN to the process, F_SETSIG SIGRTMIN+3; a write
 * into the pipe delivers that signal with si_fd = the read end and POLL_IN.
 * compat-object: O_ASYNC + F_SETOWN + F_SETSIG on a pipe
 */
#include "common.h"

static int p[2];
static volatile sig_atomic_t got_fd = -1, got_code;

static void on_io(int sig, siginfo_t *si, void *u)
{
	(void)sig;
	(void)u;
	got_fd = si->si_fd;
	got_code = si->si_code;
}

static void check(void)
{
	if (!(fcntl(p[0], F_GETFL) & O_ASYNC) || fcntl(p[0], F_GETOWN) != getpid() ||
	    fcntl(p[0], F_GETSIG) != SIGRTMIN + 3) {
		fr_status("BAD async %o owner %d sig %d", fcntl(p[0], F_GETFL) & O_ASYNC, fcntl(p[0], F_GETOWN),
			  fcntl(p[0], F_GETSIG));
		return;
	}
	got_fd = -1;
	if (write(p[1], "x", 1) != 1) {
		fr_status("BAD write");
		return;
	}
	for (int i = 0; i < 100 && got_fd < 0; i++)
		usleep(10000);
	char c;
	if (read(p[0], &c, 1) != 1) {
		fr_status("BAD read");
		return;
	}
	if (got_fd != p[0] || got_code != POLL_IN) {
		fr_status("BAD signal: si_fd %d code %d", (int)got_fd, (int)got_code);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct sigaction sa = {.sa_sigaction = on_io, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGRTMIN + 3, &sa, NULL);
	if (pipe(p) || fcntl(p[0], F_SETOWN, getpid()) || fcntl(p[0], F_SETSIG, SIGRTMIN + 3) ||
	    fcntl(p[0], F_SETFL, O_ASYNC | O_NONBLOCK))
		fr_die("setup");
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
