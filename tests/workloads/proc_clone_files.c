/* proc_clone_files STATEDIR [files|fs|vm]
 *
 * A parent and a child made with clone(CLONE_FILES) (or CLONE_FS, or CLONE_VM), not a
 * thread: they share their descriptor table (cwd and umask; address space). On SIGUSR1 the
 * parent checks the sharing still holds: the child opens STATEDIR/probe-N on request (a byte
 * written to a pipe) and the parent sees that descriptor in its own table (files); the child
 * changes directory and umask and the parent sees both (fs); the child writes a counter the
 * parent reads (vm). Dump it with --tree. Reports "ok shared=KIND" or "BAD ...".
 */
#include "common.h"
#include <sched.h>
#include <sys/prctl.h>

static const char *kind = "files";
static int req[2], ans[2];
static volatile int vm_counter;

static int child_main(void *arg)
{
	(void)arg;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		char c;
		if (read(req[0], &c, 1) != 1)
			continue;
		int r = 0;
		if (!strcmp(kind, "files")) {
			r = fr_open_in_dir("probe", O_RDONLY | O_CREAT, 0644);
		} else if (!strcmp(kind, "fs")) {
			r = chdir(c == 'a' ? "/" : fr_dir) == 0 ? 1 : -1;
			umask(c == 'a' ? 027 : 022);
		} else {
			vm_counter++;
		}
		(void)!write(ans[1], &r, sizeof(r));
	}
	return 0;
}

static void check(void)
{
	static int round;
	char c = (round++ & 1) ? 'b' : 'a';
	int r;
	if (write(req[1], &c, 1) != 1 || read(ans[0], &r, sizeof(r)) != sizeof(r))
		return fr_status("BAD no answer from the child");
	if (!strcmp(kind, "files")) {
		if (fcntl(r, F_GETFD) < 0)
			return fr_status("BAD fd %d the child opened is not in the parent's table", r);
		close(r);
	} else if (!strcmp(kind, "fs")) {
		char cwd[4096];
		mode_t m = umask(0);
		umask(m);
		if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, c == 'a' ? "/" : fr_dir) ||
		    m != (c == 'a' ? 027 : 022))
			return fr_status("BAD cwd %s umask %o after the child changed them", cwd, m);
	} else if (vm_counter != round) {
		return fr_status("BAD the child's counter reads %d, not %d", vm_counter, round);
	}
	fr_status("ok shared=%s", kind);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (argc > 2)
		kind = argv[2];
	int flag = !strcmp(kind, "files") ? CLONE_FILES : !strcmp(kind, "fs") ? CLONE_FS : CLONE_VM;
	if (pipe(req) || pipe(ans))
		fr_die("pipe");
	static char stack[1 << 16] __attribute__((aligned(16)));
	if (clone(child_main, stack + sizeof(stack), flag | SIGCHLD, NULL) < 0)
		fr_die("clone");
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
