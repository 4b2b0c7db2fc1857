/* A child in its own session (setsid) with a grandchild in a separate process group of that
 * session: each reports its sid and pgid over a pipe.
 * compat-object: child session and process group (in the tree)
 * compat-dump-args: --tree
 */
#include "common.h"

#include <sys/wait.h>

static pid_t child;
static int req[2], rep[2];

static const char *check(void)
{
	static char why[128];
	char c = 'q';
	write(req[1], &c, 1);
	write(req[1], &c, 1);
	pid_t r[2][3];
	if (read(rep[0], r[0], sizeof(r[0])) != sizeof(r[0]) || read(rep[0], r[1], sizeof(r[1])) != sizeof(r[1]))
		return "no answers";
	for (int i = 0; i < 2; i++) {
		pid_t self = r[i][0], sid = r[i][1], pg = r[i][2];
		if (sid != child || (self == child ? pg != child : pg != self)) {
			snprintf(why, sizeof(why), "pid %d: sid %d pgid %d (child %d)", self, sid, pg, child);
			return why;
		}
	}
	return NULL;
}

static void serve(void)
{
	for (;;) {
		char c;
		if (read(req[0], &c, 1) != 1)
			_exit(1);
		pid_t r[3] = {getpid(), getsid(0), getpgrp()};
		write(rep[1], r, sizeof(r));
	}
}

static void setup(void)
{
	if (pipe2(req, O_CLOEXEC) || pipe2(rep, O_CLOEXEC))
		fr_die("pipe");
	child = fork();
	if (child == 0) {
		/* the status and log files stay the parent's alone */
		close(fr_status_fd);
		close(fr_log_fd);
		setsid();
		if (fork() == 0) {
			setpgid(0, 0);
			serve();
		}
		serve();
	}
	usleep(100000);
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
