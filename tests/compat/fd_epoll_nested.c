/* An epoll instance watching another epoll instance which watches a ready eventfd: the outer one
 * reports the inner one as readable.
 * compat-object: nested epoll (epoll watching epoll)
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static int outer, inner, ev;

static void check(void)
{
	struct epoll_event out;
	if (epoll_wait(outer, &out, 1, 0) != 1 || out.data.u32 != 99) {
		fr_status("BAD outer epoll does not report the inner one");
		return;
	}
	if (epoll_wait(inner, &out, 1, 0) != 1 || out.data.u32 != 5) {
		fr_status("BAD inner epoll does not report the eventfd");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	outer = epoll_create1(0);
	inner = epoll_create1(0);
	ev = eventfd(1, 0);
	struct epoll_event ei = {.events = EPOLLIN, .data.u32 = 5};
	struct epoll_event eo = {.events = EPOLLIN, .data.u32 = 99};
	if (epoll_ctl(inner, EPOLL_CTL_ADD, ev, &ei) || epoll_ctl(outer, EPOLL_CTL_ADD, inner, &eo))
		fr_die("epoll_ctl");
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
