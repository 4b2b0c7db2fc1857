/* A pidfd of a child that has exited and not been reaped (a zombie in the tree): the pidfd is
 * readable (POLLIN) and waitid(P_PIDFD) reaps it with exit status 7.
 * compat-object: pidfd of an exited (zombie) child
 * compat-dump-args: --tree
 */
#include "common.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static int pfd = -1;
static pid_t child;

static void check(void)
{
	struct pollfd pf = {.fd = pfd, .events = POLLIN};
	if (poll(&pf, 1, 0) != 1) {
		fr_status("BAD the pidfd of the exited child is not readable");
		return;
	}
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, (id_t)pfd, &si, WEXITED | WNOWAIT) || si.si_pid != child || si.si_code != CLD_EXITED ||
	    si.si_status != 7) {
		fr_status("BAD waitid: pid %d (child %d) code %d status %d", si.si_pid, (int)child, si.si_code,
			  si.si_status);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	child = fork();
	if (child == 0)
		_exit(7);
	pfd = (int)syscall(SYS_pidfd_open, child, 0);
	if (pfd < 0)
		fr_die("pidfd_open");
	siginfo_t si;
	waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT);
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
