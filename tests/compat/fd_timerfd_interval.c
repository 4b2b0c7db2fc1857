/* timerfd on CLOCK_MONOTONIC, first expiry in 1 h, period 30 min: timerfd_gettime gives a time
 * left that only went down (by at most the time the check saw pass plus slack) and the period.
 * compat-object: timerfd armed with a long interval (relative)
 */
#include "common.h"

#include <sys/timerfd.h>

static int tfd;
static double armed_at;

static void check(void)
{
	struct itimerspec it;
	if (timerfd_gettime(tfd, &it)) {
		fr_status("BAD gettime: %s", strerror(errno));
		return;
	}
	if (it.it_interval.tv_sec != 1800 || it.it_interval.tv_nsec != 0) {
		fr_status("BAD period %lld.%09ld", (long long)it.it_interval.tv_sec, it.it_interval.tv_nsec);
		return;
	}
	double left = (double)it.it_value.tv_sec + it.it_value.tv_nsec / 1e9;
	double passed = fr_now() - armed_at;
	/* The time away may not count (documented), but the time left never grows. */
	if (left > 3600.0 || left < 3600.0 - passed - 1.0) {
		fr_status("BAD time left %.3f s after %.3f s", left, passed);
		return;
	}
	uint64_t ticks;
	if (read(tfd, &ticks, 8) != -1 || errno != EAGAIN) {
		fr_status("BAD it has expired");
		return;
	}
	fr_status("ok left=%.1f", left);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	struct itimerspec it = {.it_value = {3600, 0}, .it_interval = {1800, 0}};
	if (tfd < 0 || timerfd_settime(tfd, 0, &it, NULL))
		fr_die("timerfd");
	armed_at = fr_now();
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
