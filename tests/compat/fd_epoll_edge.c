/* epoll edge-triggered (EPOLLET): a pipe with data already reported once is not reported again
 * until new data arrives.
 * compat-object: epoll EPOLLET with an edge already consumed
 */
#include "common.h"

#include <sys/epoll.h>

static int ep, p[2];

static void check(void)
{
	struct epoll_event out[2];
	int n = epoll_wait(ep, out, 2, 0);
	if (n != 0) {
		fr_status("BAD an edge already consumed was reported again (%d)", n);
		return;
	}
	if (write(p[1], "y", 1) != 1)
		fr_die("write");
	n = epoll_wait(ep, out, 2, 0);
	if (n != 1 || out[0].data.fd != p[0] || !(out[0].events & EPOLLIN)) {
		fr_status("BAD new data not reported (%d)", n);
		return;
	}
	n = epoll_wait(ep, out, 2, 0);
	if (n != 0) {
		fr_status("BAD reported twice: not edge-triggered");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ep = epoll_create1(0);
	if (ep < 0 || pipe2(p, O_NONBLOCK))
		fr_die("setup");
	struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = p[0]};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e) || write(p[1], "x", 1) != 1)
		fr_die("epoll_ctl");
	struct epoll_event out;
	if (epoll_wait(ep, &out, 1, 0) != 1)
		fr_die("first wait");
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
