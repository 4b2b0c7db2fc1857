/* fdkinds_epoll STATEDIR edge | oneshot | nested | closed | ambiguous
 *
 * One epoll state per mode, which each check verifies by epoll_wait (and by the process's own
 * fdinfo where only that shows it), then sets up again as it was:
 *   edge     EPOLLET on two pipes: "taken" had its event taken by epoll_wait (must not come
 *            again), "pending" had one not taken yet (must come)
 *   oneshot  EPOLLONESHOT on two eventfds (both readable): "fired" fired (disarmed: events
 *            0x40000000 in fdinfo, never reported), "armed" not yet (reported once)
 *   nested   an epoll instance watching another, which watches a readable eventfd
 *   closed   a watch added as fd N, N then closed (a dup keeps the file) and N reused by
 *            /dev/null: the watch still reports, and fdinfo still names N
 *   ambiguous  EPOLLET on two pipes with one data word (7), both with an event not taken:
 *            which one had it cannot be told (the dump refuses); each check takes both
 *            events and makes them again
 * Reports "fds ep=E" and SIGUSR1: "ok checks=N", or "BAD ...".
 */
#include "common.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>

static const char *mode;
static int ep, inner, taken[2], pending[2], fired, armed, ev, keep, num;
static int checks;

/* The events of the watch of `tfd` in the process's own fdinfo of `epfd`, or -1. */
static long events_of(int epfd, int tfd)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", epfd);
	FILE *f = fopen(path, "r");
	long found = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		int fd;
		unsigned int events;
		if (sscanf(line, "tfd: %d events: %x", &fd, &events) == 2 && fd == tfd)
			found = events;
	}
	fclose(f);
	return found;
}

/* epoll_wait without blocking; the data words of what came, in `got`. */
static int wait_now(int epfd, uint64_t *got, int max)
{
	struct epoll_event out[8];
	int n = epoll_wait(epfd, out, max < 8 ? max : 8, 0);
	for (int i = 0; i < n; i++)
		got[i] = out[i].data.u64;
	return n;
}

static void add(int epfd, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event e = {.events = events, .data.u64 = data};
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e))
		fr_die("epoll_ctl");
}

static int check_edge(void)
{
	uint64_t got[8];
	int n = wait_now(ep, got, 8);
	if (n != 1 || got[0] != 2) {
		fr_status("BAD edge: %d events, first %llu (want only the pending one, 2)", n,
			  n > 0 ? (unsigned long long)got[0] : 0ull);
		return 0;
	}
	if (wait_now(ep, got, 8) != 0) {
		fr_status("BAD edge: reported twice");
		return 0;
	}
	/* A new edge on "pending" again, for the next check; "taken" stays taken. */
	if (write(pending[1], "y", 1) != 1)
		fr_die("write");
	return 1;
}

static int check_oneshot(void)
{
	if (events_of(ep, fired) != 0x40000000) {
		fr_status("BAD oneshot: the fired watch has events %lx, want 40000000",
			  events_of(ep, fired));
		return 0;
	}
	uint64_t got[8];
	int n = wait_now(ep, got, 8);
	if (n != 1 || got[0] != 12) {
		fr_status("BAD oneshot: %d events, first %llu (want only the armed one, 12)", n,
			  n > 0 ? (unsigned long long)got[0] : 0ull);
		return 0;
	}
	struct epoll_event e = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 12};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, armed, &e)) {
		fr_status("BAD oneshot: re-arm: %s", strerror(errno));
		return 0;
	}
	return 1;
}

static int check_nested(void)
{
	uint64_t got[8];
	int n = wait_now(ep, got, 8);
	if (n != 1 || got[0] != 31) {
		fr_status("BAD nested: outer gave %d events (want the inner instance, 31)", n);
		return 0;
	}
	n = wait_now(inner, got, 8);
	if (n != 1 || got[0] != 21) {
		fr_status("BAD nested: inner gave %d events (want the eventfd, 21)", n);
		return 0;
	}
	return 1;
}

static int check_closed(void)
{
	uint64_t got[8];
	int n = wait_now(ep, got, 8);
	if (n != 1 || got[0] != 41) {
		fr_status("BAD closed: %d events (want the watch through the dup, 41)", n);
		return 0;
	}
	char path[64], link[256] = "";
	snprintf(path, sizeof(path), "/proc/self/fd/%d", num);
	if (readlink(path, link, sizeof(link) - 1) < 0 || strcmp(link, "/dev/null")) {
		fr_status("BAD closed: fd %d is %s, not /dev/null", num, link);
		return 0;
	}
	if (events_of(ep, num) != (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		fr_status("BAD closed: no watch named fd %d in fdinfo", num);
		return 0;
	}
	/* The watch is keyed by fd N and the file: neither the dup nor N's new file finds it. */
	struct epoll_event e = {.events = EPOLLIN};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, keep, &e) == 0 || errno != ENOENT ||
	    epoll_ctl(ep, EPOLL_CTL_MOD, num, &e) == 0) {
		fr_status("BAD closed: the watch is keyed otherwise");
		return 0;
	}
	return 1;
}

static int check_ambiguous(void)
{
	uint64_t got[8];
	int n = wait_now(ep, got, 8);
	if (n != 2 || got[0] != 7 || got[1] != 7) {
		fr_status("BAD ambiguous: %d events (want both, data 7)", n);
		return 0;
	}
	if (write(taken[1], "x", 1) != 1 || write(pending[1], "y", 1) != 1)
		fr_die("write");
	return 1;
}

static void check(void)
{
	int ok = !strcmp(mode, "ambiguous") ? check_ambiguous()
		 : !strcmp(mode, "edge")    ? check_edge()
		 : !strcmp(mode, "oneshot") ? check_oneshot()
		 : !strcmp(mode, "nested")  ? check_nested()
					    : check_closed();
	if (ok)
		fr_status("ok checks=%d", ++checks);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	mode = argc > 2 ? argv[2] : "edge";
	ep = epoll_create1(0);
	if (ep < 0)
		fr_die("epoll_create1");
	if (!strcmp(mode, "edge")) {
		if (pipe2(taken, O_NONBLOCK) || pipe2(pending, O_NONBLOCK))
			fr_die("pipe");
		add(ep, taken[0], EPOLLIN | EPOLLET, 1);
		add(ep, pending[0], EPOLLIN | EPOLLET, 2);
		if (write(taken[1], "x", 1) != 1)
			fr_die("write");
		uint64_t got[8];
		if (wait_now(ep, got, 8) != 1)
			fr_die("first wait");
		if (write(pending[1], "y", 1) != 1)
			fr_die("write");
	} else if (!strcmp(mode, "ambiguous")) {
		if (pipe2(taken, O_NONBLOCK) || pipe2(pending, O_NONBLOCK))
			fr_die("pipe");
		add(ep, taken[0], EPOLLIN | EPOLLET, 7);
		add(ep, pending[0], EPOLLIN | EPOLLET, 7);
		if (write(taken[1], "x", 1) != 1 || write(pending[1], "y", 1) != 1)
			fr_die("write");
	} else if (!strcmp(mode, "oneshot")) {
		fired = eventfd(1, 0);
		armed = eventfd(1, 0);
		add(ep, fired, EPOLLIN | EPOLLONESHOT, 11);
		uint64_t got[8];
		if (wait_now(ep, got, 8) != 1)
			fr_die("fire");
		add(ep, armed, EPOLLIN | EPOLLONESHOT, 12);
	} else if (!strcmp(mode, "nested")) {
		inner = epoll_create1(0);
		ev = eventfd(1, 0);
		add(inner, ev, EPOLLIN, 21);
		add(ep, inner, EPOLLIN, 31);
	} else if (!strcmp(mode, "closed")) {
		num = eventfd(1, 0);
		add(ep, num, EPOLLIN, 41);
		keep = dup(num);
		close(num);
		if (open("/dev/null", O_RDONLY) != num)
			fr_die("reuse the number");
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	fr_status("fds ep=%d", ep);
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
