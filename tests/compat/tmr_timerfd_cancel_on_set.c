/* A timerfd on CLOCK_REALTIME with TFD_TIMER_ABSTIME|TFD_TIMER_CANCEL_ON_SET, deadline one hour
 * ahead: fdinfo shows settime flags 03 and the time left counts down to the same deadline.
 * compat-object: timerfd with TFD_TIMER_CANCEL_ON_SET
 */
#include "common.h"

#include <sys/timerfd.h>

#ifndef TFD_TIMER_CANCEL_ON_SET
#define TFD_TIMER_CANCEL_ON_SET (1 << 1)
#endif
static int fd;
static struct timespec at;

static const char *check(void)
{
	static char why[600];
	char p[64], b[512] = "";
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	read(f, b, sizeof(b) - 1);
	close(f);
	char *s = strstr(b, "settime flags:");
	if (!s || strtol(s + 14, NULL, 8) != 3) {
		snprintf(why, sizeof(why), "fdinfo settime flags differ: %s", b);
		return why;
	}
	struct itimerspec v;
	timerfd_gettime(fd, &v);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	double left = v.it_value.tv_sec + v.it_value.tv_nsec / 1e9;
	double want = (at.tv_sec - now.tv_sec) + (at.tv_nsec - now.tv_nsec) / 1e9;
	if (left < want - 0.05 || left > want + 0.05) {
		snprintf(why, sizeof(why), "%.3f s left, want %.3f s", left, want);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
	clock_gettime(CLOCK_REALTIME, &at);
	at.tv_sec += 3600;
	struct itimerspec v = {{0, 0}, at};
	if (timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &v, NULL))
		fr_die("timerfd_settime");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	setup();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "getpid() changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
