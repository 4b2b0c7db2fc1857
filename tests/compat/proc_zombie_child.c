/* A child that exited with status 42 and was not reaped (a zombie in the tree): waitid(WNOWAIT)
 * still reports it exited with 42, and /proc shows it as Z.
 * compat-object: zombie child
 * compat-dump-args: --tree
 */
#include "common.h"

#include <sys/wait.h>

static pid_t child;

static const char *check(void)
{
	static char why[128];
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT | WNOHANG)) {
		snprintf(why, sizeof(why), "waitid: %s", strerror(errno));
		return why;
	}
	if (si.si_pid != child || si.si_code != CLD_EXITED || si.si_status != 42) {
		snprintf(why, sizeof(why), "waitid: pid %d code %d status %d", si.si_pid, si.si_code, si.si_status);
		return why;
	}
	char p[64], b[512] = "";
	snprintf(p, sizeof(p), "/proc/%d/stat", child);
	int fd = open(p, O_RDONLY);
	read(fd, b, sizeof(b) - 1);
	close(fd);
	char *s = strrchr(b, ')');
	if (!s || s[2] != 'Z')
		return "the child is not a zombie";
	return NULL;
}

static void setup(void)
{
	child = fork();
	if (child == 0)
		_exit(42);
	siginfo_t si;
	waitid(P_PID, (id_t)child, &si, WEXITED | WNOWAIT);
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
