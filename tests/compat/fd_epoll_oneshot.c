/* epoll EPOLLONESHOT: a watch that fired is disabled (ready fd not reported) until re-armed with
 * EPOLL_CTL_MOD; a second, still armed oneshot watch reports once.
 * compat-object: epoll EPOLLONESHOT, one watch fired (disarmed), one armed
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep, fired, armed;

static void check(void)
{
	struct epoll_event out[2];
	int n = epoll_wait(ep, out, 2, 0);
	if (n != 1 || out[0].data.u32 != 2) {
		fr_status("BAD want only the armed watch, got %d (first data %u)", n, n > 0 ? out[0].data.u32 : 0);
		return;
	}
	/* Now both are disarmed; re-arm the second for the next check. */
	struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = 2};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, armed, &e)) {
		fr_status("BAD EPOLL_CTL_MOD: %s", strerror(errno));
		return;
	}
	if (epoll_wait(ep, out, 2, 0) != 1) {
		fr_status("BAD re-armed watch not reported");
		return;
	}
	epoll_ctl(ep, EPOLL_CTL_MOD, armed, &e);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ep = epoll_create1(0);
	fired = eventfd(1, 0);
	armed = eventfd(1, 0);
	struct epoll_event e1 = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = 1};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fired, &e1))
		fr_die("epoll_ctl");
	struct epoll_event out[2];
	if (epoll_wait(ep, out, 2, 0) != 1)
		fr_die("wait");
	struct epoll_event e2 = {.events = EPOLLIN | EPOLLONESHOT, .data.u32 = 2};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, armed, &e2))
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
