/* proc_stopped_child STATEDIR
 *
 * A parent with a SIGCHLD handler and a child it stopped with SIGSTOP (job control): the
 * child writes a byte to a pipe every 10 ms while it runs. The parent took the stop report
 * (waitpid WUNTRACED). On SIGUSR1 the parent checks that the child is stopped (state T in
 * /proc, no byte comes in 100 ms), then lets it go on (SIGCONT: waitpid WCONTINUED reports
 * it, bytes come again), stops it again (waitpid WUNTRACED reports SIGSTOP) and checks that
 * its SIGCHLD handler ran for each. Dump it with --tree.
 * Reports "ok child=PID sigchld=N" or "BAD ...".
 */
#include "common.h"
#include <sys/prctl.h>
#include <sys/wait.h>

static pid_t child;
static int rd;
static volatile sig_atomic_t sigchld;

static void on_chld(int s) { (void)s; sigchld++; }

static char child_state(void)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)child);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : '?';
}

static long drain(void)
{
	char buf[4096];
	long total = 0;
	ssize_t n;
	while ((n = read(rd, buf, sizeof(buf))) > 0)
		total += n;
	return total;
}

static int wait_for(int flags, const char *what)
{
	int st;
	for (int i = 0; i < 200; i++) {
		pid_t r = waitpid(child, &st, flags | WNOHANG);
		if (r == child) {
			if ((flags & WUNTRACED) && WIFSTOPPED(st) && WSTOPSIG(st) == SIGSTOP)
				return 1;
			if ((flags & WCONTINUED) && WIFCONTINUED(st))
				return 1;
			fr_status("BAD %s: waitpid gave status %#x", what, st);
			return 0;
		}
		if (r < 0 && errno != EINTR) {
			fr_status("BAD %s: waitpid: %s", what, strerror(errno));
			return 0;
		}
		usleep(10000);
	}
	fr_status("BAD %s: waitpid reported nothing in 2 s", what);
	return 0;
}

static void check(void)
{
	char s = child_state();
	if (s != 'T')
		return fr_status("BAD the child is in state %c, not stopped (T)", s);
	drain();
	usleep(100000);
	long n = drain();
	if (n)
		return fr_status("BAD the stopped child wrote %ld bytes", n);
	int before = sigchld;
	kill(child, SIGCONT);
	if (!wait_for(WCONTINUED, "SIGCONT"))
		return;
	for (int i = 0; i < 200 && (n = drain()) == 0; i++)
		usleep(10000);
	if (n == 0)
		return fr_status("BAD the child wrote nothing in 2 s once continued (state %c)",
				 child_state());
	kill(child, SIGSTOP);
	if (!wait_for(WUNTRACED, "SIGSTOP"))
		return;
	if (sigchld < before + 2)
		return fr_status("BAD SIGCHLD handler ran %d times for a continue and a stop",
				 sigchld - before);
	drain();
	fr_status("ok child=%d sigchld=%d", (int)child, (int)sigchld);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGCHLD, on_chld, SA_RESTART);
	int p[2];
	if (pipe(p))
		fr_die("pipe");
	child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(p[0]);
		for (;;) {
			if (write(p[1], "c", 1) < 0 && errno != EINTR && errno != EAGAIN)
				_exit(1);
			usleep(10000);
		}
	}
	close(p[1]);
	rd = p[0];
	fcntl(rd, F_SETFL, O_NONBLOCK);
	kill(child, SIGSTOP);
	if (!wait_for(WUNTRACED, "first stop"))
		exit(1);
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
