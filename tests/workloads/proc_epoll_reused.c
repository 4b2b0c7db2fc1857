/* proc_epoll_reused STATEDIR
 *
 * An epoll instance with two entries under one descriptor number: pipe A's read end is added
 * as fd N (data 111), kept open through a dup, fd N is closed and pipe B's read end takes the
 * number and is added too (data 222). A third pipe C was added as fd M and M closed, its file
 * kept by a dup only (data 333). On SIGUSR1, for each pipe: one byte written must wake
 * epoll_wait with exactly that entry's data (then it is read back). The entry of B must also
 * still be deletable by number (EPOLL_CTL_MOD on N must work: it names B's entry).
 * Reports "ok n=N" or "BAD ...".
 * With "elsewhere": a fourth pipe is added too and closed, its file kept open only by a child
 * (which dies with the victim): no descriptor can give the entry back, the dump must refuse.
 */
#include "common.h"
#include <sys/epoll.h>
#include <sys/prctl.h>

static int ep, a[2], b[2], c[2], a_dup, c_dup, n_num, m_num;

static int one(int wfd, int rfd, uint64_t want, const char *name)
{
	struct epoll_event ev[4];
	if (write(wfd, "x", 1) != 1)
		return fr_status("BAD write %s: %s", name, strerror(errno)), 0;
	int n = epoll_wait(ep, ev, 4, 2000);
	if (n != 1 || ev[0].data.u64 != want) {
		fr_status("BAD %s: epoll_wait gave %d events (first data %llu), want 1 with %llu", name,
			  n, n > 0 ? (unsigned long long)ev[0].data.u64 : 0ULL,
			  (unsigned long long)want);
		char x;
		(void)!read(rfd, &x, 1);
		return 0;
	}
	char x;
	if (read(rfd, &x, 1) != 1)
		return fr_status("BAD read %s", name), 0;
	if (epoll_wait(ep, ev, 4, 0) != 0)
		return fr_status("BAD %s: still ready after the read", name), 0;
	return 1;
}

static void check(void)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 222};
	if (!one(a[1], a_dup, 111, "pipe A (old number)") || !one(b[1], b[0], 222, "pipe B") ||
	    !one(c[1], c_dup, 333, "pipe C (number closed)"))
		return;
	if (epoll_ctl(ep, EPOLL_CTL_MOD, n_num, &ev))
		return fr_status("BAD EPOLL_CTL_MOD on fd %d: %s", n_num, strerror(errno));
	fr_status("ok n=%d m=%d", n_num, m_num);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0 || pipe(a) || pipe(c))
		fr_die("setup");
	n_num = a[0];
	m_num = c[0];
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 111};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, a[0], &ev))
		fr_die("epoll_ctl A");
	ev.data.u64 = 333;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, c[0], &ev))
		fr_die("epoll_ctl C");
	a_dup = dup(a[0]);
	c_dup = dup(c[0]);
	close(a[0]);
	if (pipe(b))
		fr_die("pipe B");
	close(c[0]); /* after pipe(B): number M stays closed */
	if (b[0] != n_num) {
		/* Put B's read end at N. */
		if (dup2(b[0], n_num) < 0)
			fr_die("dup2");
		close(b[0]);
		b[0] = n_num;
	}
	ev.data.u64 = 222;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, b[0], &ev))
		fr_die("epoll_ctl B");
	if (argc > 2 && !strcmp(argv[2], "elsewhere")) {
		int d[2];
		if (pipe(d))
			fr_die("pipe D");
		ev.data.u64 = 444;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, d[0], &ev))
			fr_die("epoll_ctl D");
		pid_t child = fork();
		if (child < 0)
			fr_die("fork");
		if (child == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != fr_pid0)
				_exit(0);
			for (;;)
				pause();
		}
		close(d[0]);
		close(d[1]);
		fr_status("elsewhere fd=%d", d[0]);
	}
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
