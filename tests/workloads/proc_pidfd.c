/* proc_pidfd STATEDIR [outside|reaped]
 *
 * Holds pidfds of itself, of a live child and of a child that exited with code 5 and is not
 * reaped yet (a zombie). On SIGUSR1 it checks each through the pidfd: fdinfo names the same
 * PID; itself and the live child take signal 0 (pidfd_send_signal) and are not readable
 * (poll); the zombie is readable and waitid(P_PIDFD, WNOWAIT) reports exit code 5.
 * Dump it with --tree. Reports "ok self=PID child=PID zombie=PID" or "BAD ...".
 * With "outside": a pidfd of its parent too (not part of the tree: the dump must refuse it).
 * With "reaped": a pidfd of a child it already reaped (the dump must refuse it).
 */
#include "common.h"
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int pself, pchild, pzombie;
static pid_t child, zombie;

static int pidfd_open(pid_t p) { return (int)syscall(SYS_pidfd_open, p, 0); }

static pid_t fdinfo_pid(int fd)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	if (f < 0)
		return -2;
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	buf[n < 0 ? 0 : n] = 0;
	char *l = strstr(buf, "\nPid:");
	return l ? (pid_t)atoi(l + 5) : -2;
}

static int readable(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void check(void)
{
	if (fdinfo_pid(pself) != getpid() || fdinfo_pid(pchild) != child ||
	    fdinfo_pid(pzombie) != zombie)
		return fr_status("BAD fdinfo Pid: self %d child %d zombie %d, want %d %d %d",
				 fdinfo_pid(pself), fdinfo_pid(pchild), fdinfo_pid(pzombie),
				 (int)getpid(), (int)child, (int)zombie);
	if (syscall(SYS_pidfd_send_signal, pself, 0, NULL, 0) ||
	    syscall(SYS_pidfd_send_signal, pchild, 0, NULL, 0))
		return fr_status("BAD pidfd_send_signal: %s", strerror(errno));
	if (readable(pself) || readable(pchild))
		return fr_status("BAD a live process's pidfd is readable");
	if (!readable(pzombie))
		return fr_status("BAD the zombie's pidfd is not readable");
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, pzombie, &si, WEXITED | WNOWAIT | WNOHANG) || si.si_pid != zombie ||
	    si.si_code != CLD_EXITED || si.si_status != 5)
		return fr_status("BAD waitid(P_PIDFD) on the zombie: %s pid %d code %d status %d",
				 strerror(errno), si.si_pid, si.si_code, si.si_status);
	fr_status("ok self=%d child=%d zombie=%d", (int)getpid(), (int)child, (int)zombie);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	child = fork();
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	zombie = fork();
	if (zombie == 0)
		_exit(5);
	if (child < 0 || zombie < 0)
		fr_die("fork");
	pself = pidfd_open(getpid());
	pchild = pidfd_open(child);
	pzombie = pidfd_open(zombie);
	if (pself < 0 || pchild < 0 || pzombie < 0)
		fr_die("pidfd_open");
	while (!readable(pzombie))
		usleep(1000);
	if (!strcmp(mode, "outside")) {
		int p = pidfd_open(getppid());
		fr_status("outside fd=%d pid=%d", p, (int)getppid());
	} else if (!strcmp(mode, "reaped")) {
		pid_t r = fork();
		if (r == 0)
			_exit(0);
		int p = pidfd_open(r);
		waitpid(r, NULL, 0);
		fr_status("reaped fd=%d", p);
	}
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
