/* A one-shot timerfd that expired before the dump and was not read: one expiration is waiting.
 * compat-object: timerfd expired with unread expirations
 */
#include "common.h"

#include <sys/timerfd.h>

static int tfd;
static int checks;

static void check(void)
{
	uint64_t n = 0;
	ssize_t r = read(tfd, &n, 8);
	if (r != 8 || n != 1) {
		fr_status("BAD read %zd count %llu, want one unread expiration", r, (unsigned long long)n);
		return;
	}
	struct itimerspec it = {.it_value = {0, 1000000}};
	timerfd_settime(tfd, 0, &it, NULL);
	usleep(20000);
	fr_status("ok checks=%d", ++checks);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec it = {.it_value = {0, 1000000}};
	if (tfd < 0 || timerfd_settime(tfd, 0, &it, NULL))
		fr_die("timerfd");
	usleep(20000);
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
