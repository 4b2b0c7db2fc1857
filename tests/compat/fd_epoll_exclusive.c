/* epoll with EPOLLEXCLUSIVE: EPOLL_CTL_MOD on the watch fails with EINVAL, as the kernel does for
 * exclusive watches only; the ready fd is still reported with its data word.
 * compat-object: epoll EPOLLEXCLUSIVE watch
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep, ev;

static void check(void)
{
	struct epoll_event e = {.events = EPOLLIN, .data.u32 = 1};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, ev, &e) != -1 || errno != EINVAL) {
		fr_status("BAD EPOLL_CTL_MOD on the watch did not fail with EINVAL: not exclusive");
		return;
	}
	struct epoll_event out;
	if (epoll_wait(ep, &out, 1, 0) != 1 || out.data.u32 != 7) {
		fr_status("BAD ready eventfd not reported");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ep = epoll_create1(0);
	ev = eventfd(3, 0);
	struct epoll_event e = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.u32 = 7};
	if (ep < 0 || ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e))
		fr_die("setup");
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
