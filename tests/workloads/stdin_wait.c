/* Waits for its stdin in poll(), select() or epoll_wait(), with no timeout, once per argument
 * ("poll", "select", "epoll", in the order given): prints "waiting MODE", waits until stdin is
 * readable, reads what is there and prints "got MODE:TEXT". Then exits with 7.
 * No common.h state directory: it is a job of `ferry run` (client_away.rs). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <unistd.h>

static void wait_stdin(const char *mode)
{
	if (strcmp(mode, "poll") == 0) {
		struct pollfd p = { .fd = 0, .events = POLLIN };
		while (poll(&p, 1, -1) < 0)
			if (errno != EINTR) {
				perror("poll");
				exit(1);
			}
	} else if (strcmp(mode, "select") == 0) {
		for (;;) {
			fd_set r;
			FD_ZERO(&r);
			FD_SET(0, &r);
			if (select(1, &r, NULL, NULL, NULL) > 0)
				break;
			if (errno != EINTR) {
				perror("select");
				exit(1);
			}
		}
	} else if (strcmp(mode, "epoll") == 0) {
		int ep = epoll_create1(EPOLL_CLOEXEC);
		struct epoll_event ev = { .events = EPOLLIN, .data.fd = 0 };
		if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) < 0) {
			perror("epoll");
			exit(1);
		}
		struct epoll_event got;
		while (epoll_wait(ep, &got, 1, -1) < 1)
			if (errno != EINTR) {
				perror("epoll_wait");
				exit(1);
			}
		close(ep);
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		exit(2);
	}
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		printf("waiting %s\n", argv[i]);
		fflush(stdout);
		wait_stdin(argv[i]);
		char buf[256];
		ssize_t n = read(0, buf, sizeof(buf) - 1);
		if (n < 0) {
			perror("read");
			return 1;
		}
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			n--;
		buf[n] = 0;
		printf("got %s:%s\n", argv[i], buf);
		fflush(stdout);
	}
	return 7;
}
