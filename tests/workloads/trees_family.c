/* A family: the root has a zombie child (exit 7), child A (reads a pipe whose bytes were queued
 * by the root), child B (own process group, blocked in wait4 for its child G), child C (own
 * session, shares an open file description with the root). Usage: trees_family DIR.
 * DIR/ready appears once all are set up. On SIGUSR1 each process reports one line to
 * DIR/report: "NAME pid ppid pgid sid extra". The root reaps the zombie first, then writes its
 * byte to the shared file after C has, then reaps everybody. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *dir;
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void wait_go(void)
{
	sigset_t none;
	sigemptyset(&none);
	while (!go)
		sigsuspend(&none);
}

static void report(const char *name, const char *extra)
{
	char path[512], line[512];
	snprintf(path, sizeof path, "%s/report", dir);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	int n = snprintf(line, sizeof line, "%s %d %d %d %d %s\n", name, (int)getpid(),
			 (int)getppid(), (int)getpgid(0), (int)getsid(0), extra);
	if (write(fd, line, n) != n)
		_exit(90);
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	dir = argv[1];
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	signal(SIGUSR1, on_usr1);
	char path[512];
	snprintf(path, sizeof path, "%s/shared", dir);
	int shared = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	int p[2];
	if (pipe(p) || write(p[1], "queued-bytes", 12) != 12)
		return 3;

	pid_t z = fork();
	if (z == 0)
		_exit(7);
	pid_t a = fork();
	if (a == 0) {
		close(p[1]);
		wait_go();
		char buf[32] = { 0 };
		ssize_t n = read(p[0], buf, sizeof buf - 1);
		char extra[64];
		snprintf(extra, sizeof extra, "read=%zd:%s", n, buf);
		report("A", extra);
		_exit(0);
	}
	close(p[0]);
	close(p[1]);
	pid_t b = fork();
	if (b == 0) {
		setpgid(0, 0);
		pid_t g = fork();
		if (g == 0) {
			wait_go();
			report("G", "-");
			_exit(3);
		}
		int st = 0;
		sigprocmask(SIG_UNBLOCK, &usr1, NULL);
		pid_t r;
		do
			r = wait4(g, &st, 0, NULL);
		while (r < 0 && errno == EINTR);
		char extra[64];
		snprintf(extra, sizeof extra, "reaped=%d:%d", r == g, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
		report("B", extra);
		_exit(0);
	}
	pid_t c = fork();
	if (c == 0) {
		setsid();
		wait_go();
		if (write(shared, "C", 1) != 1)
			_exit(91);
		report("C", "-");
		_exit(0);
	}
	usleep(200000);
	snprintf(path, sizeof path, "%s/ready", dir);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	wait_go();
	int st = 0;
	pid_t r = waitpid(z, &st, 0);
	char extra[64];
	snprintf(extra, sizeof extra, "zombie=%d:%d", r == z, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	/* After C's byte: with one shared offset, the file ends up 2 bytes long. */
	waitpid(c, &st, 0);
	if (write(shared, "P", 1) != 1)
		return 4;
	report("P", extra);
	waitpid(a, &st, 0);
	waitpid(b, &st, 0);
	return 0;
}
