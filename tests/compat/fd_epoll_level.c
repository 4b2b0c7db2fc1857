/* epoll, level-triggered: an eventfd (ready), a pipe read end (not ready) with their data words;
 * epoll_wait reports exactly the ready one, repeatedly.
 * compat-object: epoll level-triggered interest list with data words
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static int ep, ev, p[2];

static void check(void)
{
	struct epoll_event out[4];
	for (int round = 0; round < 2; round++) {
		int n = epoll_wait(ep, out, 4, 0);
		if (n != 1 || out[0].data.u64 != 0xfeedface12345678ull || !(out[0].events & EPOLLIN)) {
			fr_status("BAD round %d: %d ready, data %llx", round, n,
				  n > 0 ? (unsigned long long)out[0].data.u64 : 0ull);
			return;
		}
	}
	if (write(p[1], "x", 1) != 1)
		fr_die("write");
	int n = epoll_wait(ep, out, 4, 0);
	char c;
	if (read(p[0], &c, 1) != 1)
		fr_die("read");
	if (n != 2) {
		fr_status("BAD pipe not reported (%d ready)", n);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev = eventfd(1, EFD_NONBLOCK);
	if (ep < 0 || ev < 0 || pipe(p))
		fr_die("setup");
	struct epoll_event e1 = {.events = EPOLLIN, .data.u64 = 0xfeedface12345678ull};
	struct epoll_event e2 = {.events = EPOLLIN, .data.u64 = 42};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e1) || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e2))
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
