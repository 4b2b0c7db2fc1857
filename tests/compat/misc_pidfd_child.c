/* A pidfd of a child (pidfd_open) in the same tree: it refers to the
 * child; killing the child through it makes the pidfd readable and waitid(P_PIDFD) reaps it.
 * The child is re-forked at each check so the check can repeat.
 * compat-object: pidfd of a child process
 * compat-dump-args: --tree
 */
#include "common.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static int pfd = -1;
static pid_t child;

static void spawn(void)
{
	child = fork();
	if (child == 0) {
		for (;;)
			pause();
	}
	pfd = (int)syscall(SYS_pidfd_open, child, 0);
	if (pfd < 0)
		fr_die("pidfd_open");
}

static void check(void)
{
	struct pollfd pf = {.fd = pfd, .events = POLLIN};
	if (poll(&pf, 1, 0) != 0) {
		fr_status("BAD the child's pidfd says it exited");
		return;
	}
	if (syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0)) {
		fr_status("BAD pidfd_send_signal: %s", strerror(errno));
		return;
	}
	if (poll(&pf, 1, 2000) != 1) {
		fr_status("BAD the pidfd did not become readable when the child died");
		return;
	}
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, (id_t)pfd, &si, WEXITED) || si.si_pid != child || si.si_status != SIGKILL) {
		fr_status("BAD waitid(P_PIDFD): pid %d (child %d) status %d: %s", si.si_pid, (int)child,
			  si.si_status, strerror(errno));
		return;
	}
	close(pfd);
	spawn();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	spawn();
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
