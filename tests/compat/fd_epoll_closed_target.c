/* An epoll watch whose fd was dup'd then the original number closed: the watch (keyed by the
 * original fd number and the file) still reports through the file held by the dup.
 * compat-object: epoll watching a file whose watched fd number was closed (dup kept)
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep, keep;

static void check(void)
{
	struct epoll_event out;
	if (epoll_wait(ep, &out, 1, 0) != 1 || out.data.u32 != 11) {
		fr_status("BAD the watch is gone");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ep = epoll_create1(0);
	int ev = eventfd(1, 0);
	struct epoll_event e = {.events = EPOLLIN, .data.u32 = 11};
	if (ep < 0 || ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e))
		fr_die("setup");
	keep = dup(ev);
	close(ev);
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
