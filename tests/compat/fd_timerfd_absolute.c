/* A TFD_TIMER_ABSTIME timer on CLOCK_REALTIME set to fire at a wall-clock time 2 hours ahead:
 * the time left matches that wall-clock time, and a disarmed timer on the same clock stays
 * disarmed.
 * compat-object: timerfd absolute CLOCK_REALTIME, and a disarmed timerfd
 */
#include "common.h"

#include <sys/timerfd.h>

static int abs_fd, off_fd;
static time_t deadline;

static void check(void)
{
	struct itimerspec it, off;
	timerfd_gettime(abs_fd, &it);
	timerfd_gettime(off_fd, &off);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	double want = (double)deadline - ((double)now.tv_sec + now.tv_nsec / 1e9);
	double left = (double)it.it_value.tv_sec + it.it_value.tv_nsec / 1e9;
	if (left < want - 1.0 || left > want + 1.0) {
		fr_status("BAD time left %.3f s, the wall-clock deadline is %.3f s away", left, want);
		return;
	}
	if (off.it_value.tv_sec || off.it_value.tv_nsec || off.it_interval.tv_sec) {
		fr_status("BAD the disarmed timer is armed");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	abs_fd = timerfd_create(CLOCK_REALTIME, 0);
	off_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	deadline = now.tv_sec + 7200;
	struct itimerspec it = {.it_value = {deadline, 0}};
	if (abs_fd < 0 || off_fd < 0 || timerfd_settime(abs_fd, TFD_TIMER_ABSTIME, &it, NULL))
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
