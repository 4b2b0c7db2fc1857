/* A pidfd of the process itself: it refers to this process (pidfd_send_signal with signal 0
 * works, fdinfo Pid: is getpid()), and it is not readable-for-exit (poll gives no POLLIN).
 * compat-object: pidfd of the process itself
 */
#include "common.h"

#include <poll.h>
#include <sys/syscall.h>

static int pfd;

static int fdinfo_pid(int fd)
{
	char p[64], buf[1024];
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		return -2;
	buf[n] = 0;
	char *s = strstr(buf, "\nPid:");
	return s ? atoi(s + 5) : -3;
}

static void check(void)
{
	if (syscall(SYS_pidfd_send_signal, pfd, 0, NULL, 0)) {
		fr_status("BAD pidfd_send_signal: %s", strerror(errno));
		return;
	}
	int p = fdinfo_pid(pfd);
	if (p != getpid()) {
		fr_status("BAD pidfd refers to pid %d, not %d", p, (int)getpid());
		return;
	}
	struct pollfd pf = {.fd = pfd, .events = POLLIN};
	if (poll(&pf, 1, 0) != 0) {
		fr_status("BAD the pidfd says the process exited");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (pfd < 0)
		fr_die("pidfd_open");
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
