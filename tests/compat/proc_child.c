/* A child process (forked, in the tree) that answers over a pipe pair: it still answers, its
 * parent is the victim (getppid in the child) and its pid is the one fork returned.
 * compat-object: child process in the tree
 * compat-dump-args: --tree
 */
#include "common.h"

#include <sys/wait.h>

static pid_t child;
static int to_c[2], from_c[2];

static const char *check(void)
{
	static int v;
	v++;
	int r[2] = {0, 0};
	if (write(to_c[1], &v, sizeof(v)) != sizeof(v) || read(from_c[0], r, sizeof(r)) != sizeof(r))
		return "the child does not answer";
	if (r[0] != v + 1)
		return "the child answered wrong";
	if (r[1] != fr_pid0)
		return "the child's getppid() is not the victim";
	if (waitpid(child, NULL, WNOHANG) != 0)
		return "the child is not our child any more";
	return NULL;
}

static void setup(void)
{
	if (pipe(to_c) || pipe(from_c))
		fr_die("pipe");
	child = fork();
	if (child == 0) {
		for (;;) {
			int v;
			if (read(to_c[0], &v, sizeof(v)) != sizeof(v))
				_exit(1);
			int r[2] = {v + 1, getppid()};
			write(from_c[1], r, sizeof(r));
		}
	}
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
