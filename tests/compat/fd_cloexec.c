/* Close-on-exec per descriptor: of four descriptors of one pipe and a file, two have
 * FD_CLOEXEC; an exec'd child (via /proc/self/fd listing in a shell) must see exactly the others.
 * compat-object: FD_CLOEXEC per descriptor (checked by exec)
 */
#include "common.h"

#include <sys/wait.h>

static int p[2], f1, f2;

static void check(void)
{
	if (!(fcntl(p[0], F_GETFD) & FD_CLOEXEC) || (fcntl(p[1], F_GETFD) & FD_CLOEXEC) ||
	    (fcntl(f1, F_GETFD) & FD_CLOEXEC) || !(fcntl(f2, F_GETFD) & FD_CLOEXEC)) {
		fr_status("BAD FD_CLOEXEC bits");
		return;
	}
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "test -e /proc/self/fd/%d && test -e /proc/self/fd/%d && ! test -e /proc/self/fd/%d && ! test -e /proc/self/fd/%d",
		 p[1], f1, p[0], f2);
	pid_t c = fork();
	if (c == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	int st;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fr_status("BAD after exec the descriptors left open are wrong (%d)", st);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fcntl(fr_status_fd, F_SETFD, FD_CLOEXEC);
	fcntl(fr_log_fd, F_SETFD, FD_CLOEXEC);
	if (pipe2(p, 0))
		fr_die("pipe");
	fcntl(p[0], F_SETFD, FD_CLOEXEC);
	fr_write_data_file("data", 100);
	f1 = fr_open_in_dir("data", O_RDONLY, 0);
	f2 = fr_open_in_dir("data", O_RDONLY | O_CLOEXEC, 0);
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
