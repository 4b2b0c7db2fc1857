/* An eventfd shared by two descriptors (dup) with one watched by epoll: a write through one
 * number is read through the other; epoll sees it.
 * compat-object: eventfd shared by dup'd descriptors, watched by epoll
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static int a, b, ep;

static void check(void)
{
	struct epoll_event e;
	if (epoll_wait(ep, &e, 1, 0) != 1) {
		fr_status("BAD epoll does not see the count");
		return;
	}
	uint64_t v;
	if (read(b, &v, 8) != 8 || v != 41) {
		fr_status("BAD count read through the dup: %llu want 41", (unsigned long long)v);
		return;
	}
	v = 41;
	if (write(a, &v, 8) != 8) {
		fr_status("BAD write");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	a = eventfd(41, EFD_NONBLOCK);
	b = dup(a);
	ep = epoll_create1(0);
	struct epoll_event e = {.events = EPOLLIN, .data.fd = a};
	if (a < 0 || b < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, a, &e))
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
