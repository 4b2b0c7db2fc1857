/* A timerfd firing every 50 ms: it keeps firing after the restore (expirations accumulate, read
 * gives a count >= 1 within 200 ms after each read).
 * compat-object: timerfd with a short period, still firing
 */
#include "common.h"

#include <sys/timerfd.h>

static int tfd;

static void check(void)
{
	uint64_t n = 0;
	(void)!read(tfd, &n, 8);
	usleep(200000);
	n = 0;
	if (read(tfd, &n, 8) != 8 || n < 1 || n > 10) {
		fr_status("BAD expirations in 200 ms: %llu (%s)", (unsigned long long)n, strerror(errno));
		return;
	}
	fr_status("ok n=%llu", (unsigned long long)n);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	tfd = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK);
	struct itimerspec it = {.it_value = {0, 50000000}, .it_interval = {0, 50000000}};
	if (tfd < 0 || timerfd_settime(tfd, 0, &it, NULL))
		fr_die("timerfd");
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
