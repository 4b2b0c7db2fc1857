/* epoll on stdin (a pipe) with 300 ms timeouts: a tick per timeout, "got LINE" per line read,
 * "eof" at end of file. SIGUSR1 makes it report "ok pid=P counter=N". */
#include "common.h"

#include <sys/epoll.h>

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		fr_die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0xfe77};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev))
		fr_die("epoll_ctl");
	unsigned long counter = 0;
	int eof = 0;
	fr_status("epfd=%d", ep);
	fr_ready();
	for (;;) {
		struct epoll_event out[4];
		int n = epoll_wait(ep, out, 4, 300);
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			fr_status("ok pid=%d counter=%lu", (int)getpid(), counter);
		}
		if (n < 0) {
			if (errno != EINTR)
				fr_status("BAD epoll_wait: %s", strerror(errno));
			continue;
		}
		if (n == 0) {
			counter++;
			fr_log_tick(counter);
			continue;
		}
		if (out[0].data.u64 != 0xfe77) {
			fr_status("BAD epoll data %llx", (unsigned long long)out[0].data.u64);
			continue;
		}
		char buf[512];
		ssize_t r = read(0, buf, sizeof(buf) - 1);
		if (r <= 0) {
			if (!eof)
				fr_status("eof pid=%d", (int)getpid());
			eof = 1;
			epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
			continue;
		}
		while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\r'))
			r--;
		buf[r] = 0;
		fr_status("got %s pid=%d", buf, (int)getpid());
	}
}
