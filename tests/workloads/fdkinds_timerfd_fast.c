/* fdkinds_timerfd_fast STATEDIR
 *
 * A timerfd firing every millisecond, never read between checks: its expirations keep piling
 * up while it is dumped and restored (the restore checker reads more than the image holds).
 * Reports "fds fast=N". SIGUSR1: reads it twice 20 ms apart and reports
 * "ok checks=N first=F second=S" (both >= 1), or "BAD ...".
 */
#include "common.h"

#include <sys/timerfd.h>

static int fast, checks;

static void check(void)
{
	uint64_t first = 0, second = 0;
	if (read(fast, &first, 8) != 8 || first < 1) {
		fr_status("BAD first read: %llu (%s)", (unsigned long long)first, strerror(errno));
		return;
	}
	usleep(20000);
	if (read(fast, &second, 8) != 8 || second < 1 || second > 1000) {
		fr_status("BAD second read: %llu (%s)", (unsigned long long)second, strerror(errno));
		return;
	}
	fr_status("ok checks=%d first=%llu second=%llu", ++checks, (unsigned long long)first,
		  (unsigned long long)second);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fast = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec it = {.it_value = {0, 1000000}, .it_interval = {0, 1000000}};
	if (fast < 0 || timerfd_settime(fast, 0, &it, NULL))
		fr_die("timerfd");
	fr_status("fds fast=%d", fast);
	usleep(5000); /* the first check finds expirations */
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
