/* A Linux native AIO context (io_setup) with requests in flight: a poll (IOCB_CMD_POLL) on each
 * of 64 timerfds whose periodic expiries are spread 5 ms apart, each armed again once reaped.
 * The kernel shows no list of such requests: the dump sees them complete while the process is
 * frozen and must refuse. Should it not, each check waits 0.7 s and finds every timer's poll
 * completing (a request lost in the restore never does).
 * compat-object: AIO context (io_setup) with requests in flight
 * compat-refuse: requests in flight
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#define NT 64

static aio_context_t ctx;
static int tfd[NT];
static struct iocb pcb[NT];
static double last[NT];

static int arm(int i)
{
	pcb[i] = (struct iocb){.aio_data = (uint64_t)i, .aio_lio_opcode = IOCB_CMD_POLL,
			       .aio_fildes = (uint32_t)tfd[i], .aio_buf = POLLIN};
	struct iocb *p = &pcb[i];
	return syscall(SYS_io_submit, ctx, 1, &p) == 1 ? 0 : -1;
}

/* Reaps completed polls, clears their timers and arms them again: how many, or -1. */
static long pump(long min_nr, struct timespec *ts)
{
	struct io_event ev[NT];
	long n = syscall(SYS_io_getevents, ctx, min_nr, NT, ev, ts);
	for (long k = 0; k < n; k++) {
		uint64_t i = ev[k].data, x;
		if (i >= NT || !(ev[k].res & POLLIN) || read(tfd[i], &x, 8) != 8 || arm((int)i))
			return -1;
		last[i] = fr_now();
	}
	return n;
}

static void check(void)
{
	double t0 = fr_now();
	while (fr_now() - t0 < 0.7) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		if (pump(1, &ts) < 0) {
			fr_status("BAD reaping the polls: %s", strerror(errno));
			return;
		}
	}
	for (int i = 0; i < NT; i++) {
		if (last[i] < t0) {
			fr_status("BAD the poll on timer %d did not complete in 0.7 s (lost)", i);
			return;
		}
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (syscall(SYS_io_setup, 256, &ctx))
		fr_die("io_setup");
	for (int i = 0; i < NT; i++) {
		tfd[i] = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		struct itimerspec its = {.it_interval = {0, 320 * 1000 * 1000},
					 .it_value = {0, (i + 1) * 5 * 1000 * 1000}};
		if (tfd[i] < 0 || timerfd_settime(tfd[i], 0, &its, NULL) || arm(i))
			fr_die("timerfd poll");
	}
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		struct timespec zero = {0, 0};
		if (pump(0, &zero) < 0)
			fr_die("pump");
		fr_log_tick(tick);
		usleep(10000);
	}
}
