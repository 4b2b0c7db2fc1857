/* A child stopped by SIGSTOP (in the tree): /proc shows it T (stopped), nothing continued it
 * meanwhile (its SIGCONT handler wrote nothing), and SIGCONT then makes its handler answer; it is
 * stopped again after each check. The child says it has its handler before it is first stopped
 * (else the first SIGCONT could come before the handler), and the parent waits for the answer
 * with a timeout (a check must fail, not hang).
 * compat-object: stopped child process
 * compat-dump-args: --tree
 */
#include "common.h"

#include <poll.h>
#include <sys/wait.h>

static pid_t child;
static int from_c[2];

static char state(void)
{
	char p[64], b[512] = "";
	snprintf(p, sizeof(p), "/proc/%d/stat", child);
	int fd = open(p, O_RDONLY);
	read(fd, b, sizeof(b) - 1);
	close(fd);
	char *s = strrchr(b, ')');
	return s ? s[2] : '?';
}

static const char *check(void)
{
	static char why[96];
	char st = state();
	if (st != 'T') {
		snprintf(why, sizeof(why), "the child is in state %c, not stopped", st);
		return why;
	}
	char c;
	if (read(from_c[0], &c, 1) == 1)
		return "the child's SIGCONT handler ran while it was to be stopped";
	kill(child, SIGCONT);
	struct pollfd p = {.fd = from_c[0], .events = POLLIN};
	int r;
	for (int i = 0; i < 100 && (r = poll(&p, 1, 50)) == 0; i++)
		;
	if (r != 1 || read(from_c[0], &c, 1) != 1 || c != 'c') {
		snprintf(why, sizeof(why), "the continued child does not answer in 5 s (state %c)", state());
		return why;
	}
	kill(child, SIGSTOP);
	for (int i = 0; i < 400 && state() != 'T'; i++)
		usleep(5000);
	return NULL;
}

static void on_cont(int s)
{
	(void)s;
	write(from_c[1], "c", 1);
}

static void setup(void)
{
	if (pipe2(from_c, O_CLOEXEC | O_NONBLOCK))
		fr_die("pipe");
	fr_install(SIGCHLD, SIG_IGN, 0);
	fr_install(SIGCHLD, SIG_DFL, 0);
	child = fork();
	if (child == 0) {
		/* the status and log files stay the parent's alone */
		close(fr_status_fd);
		close(fr_log_fd);
		fr_install(SIGCONT, on_cont, SA_RESTART);
		write(from_c[1], "r", 1);
		for (;;)
			pause();
	}
	struct pollfd p = {.fd = from_c[0], .events = POLLIN};
	char c;
	if (poll(&p, 1, 10000) != 1 || read(from_c[0], &c, 1) != 1 || c != 'r')
		fr_die("the child did not say it has its SIGCONT handler");
	kill(child, SIGSTOP);
	int st;
	if (waitpid(child, &st, WUNTRACED) != child || !WIFSTOPPED(st))
		fr_die("waitpid WUNTRACED");
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
