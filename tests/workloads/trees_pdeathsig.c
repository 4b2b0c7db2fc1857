/* trees_pdeathsig DIR
 *
 * The root forks a child that sets PR_SET_PDEATHSIG(SIGUSR2), then both wait. Before the
 * fork the root makes a pipe whose read end (O_ASYNC) sends SIGRTMIN+1 to the root
 * (F_SETOWN_EX F_OWNER_PID, F_SETSIG): the child shares that description, owned by another
 * member of the tree. DIR/ready
 * appears once the child is set up. The child writes to DIR/status:
 *   "ready pid=CHILD ppid=ROOT",
 *   on SIGUSR1 "ok pdeathsig=N ppid=P" when PR_GET_PDEATHSIG is SIGUSR2 and its parent is
 *   still the root (else "BAD ..."),
 *   on SIGUSR2 (its parent died) "fired sig=12 ppid=P", then it exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static const char *dir;
static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static void on_usr2(int s) { (void)s; usr2 = 1; }

static void status(const char *fmt, long a, long b)
{
	char path[512], line[256];
	snprintf(path, sizeof path, "%s/status", dir);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	int n = snprintf(line, sizeof line, fmt, a, b);
	line[n++] = '\n';
	if (fd < 0 || write(fd, line, n) != n)
		_exit(90);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	dir = argv[1];
	sigset_t block, none;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR1);
	sigaddset(&block, SIGUSR2);
	sigemptyset(&none);
	sigprocmask(SIG_BLOCK, &block, NULL);
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	/* A session of its own, and no descriptors shared in the child: the tree is only about
	 * the parent-death signal. */
	setsid();
	pid_t root = getpid();
	int io[2];
	struct f_owner_ex ex = {F_OWNER_PID, root};
	signal(SIGRTMIN + 1, SIG_IGN);
	if (pipe(io) || fcntl(io[0], F_SETOWN_EX, &ex) || fcntl(io[0], F_SETSIG, SIGRTMIN + 1) ||
	    fcntl(io[0], F_SETFL, O_ASYNC | O_NONBLOCK))
		return 8;
	int p[2];
	if (pipe(p))
		return 3;
	pid_t c = fork();
	if (c < 0)
		return 4;
	if (c == 0) {
		close(p[0]);
		close(0);
		close(1);
		close(2);
		if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0))
			_exit(5);
		if (getppid() != root)
			_exit(6); /* the root died already */
		status("ready pid=%ld ppid=%ld", (long)getpid(), (long)getppid());
		close(p[1]);
		for (;;) {
			sigsuspend(&none);
			if (usr2) {
				status("fired sig=%ld ppid=%ld", SIGUSR2, (long)getppid());
				_exit(0);
			}
			if (usr1) {
				usr1 = 0;
				int sig = -1;
				prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0);
				struct f_owner_ex now = {-1, -1};
				fcntl(io[0], F_GETOWN_EX, &now);
				if (now.type != F_OWNER_PID || now.pid != root ||
				    fcntl(io[0], F_GETSIG) != SIGRTMIN + 1)
					status("BAD io owner %ld signal %ld", now.pid, fcntl(io[0], F_GETSIG));
				else if (sig == SIGUSR2 && getppid() == root)
					status("ok pdeathsig=%ld ppid=%ld", sig, (long)getppid());
				else
					status("BAD pdeathsig=%ld ppid=%ld", sig, (long)getppid());
			}
		}
	}
	close(p[1]);
	char b;
	if (read(p[0], &b, 1) != 0)
		return 7;
	close(p[0]);
	char path[512];
	snprintf(path, sizeof path, "%s/ready", dir);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (;;)
		sigsuspend(&none);
}
