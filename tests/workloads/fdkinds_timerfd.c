/* timerfd: five timers whose expirations must keep coming at the right moments.
 * compat-object: timerfd timers (relative, absolute, interval)
 *   tick     CLOCK_MONOTONIC, every 100 ms, read by the main loop (count "periodic")
 *   once     CLOCK_MONOTONIC, one-shot 3 s after start (relative): "fired once" when read
 *   wall     CLOCK_REALTIME, TFD_TIMER_ABSTIME one-shot at start + 5 s: "fired wall late_ms=L"
 *   expired  CLOCK_MONOTONIC, one-shot 10 ms after start, left unread until the 2nd check
 *   burst    CLOCK_BOOTTIME, every 50 ms, left unread until the 2nd check
 * Each check reports:
 *   ok checks=N periodic=P interval_ms=I once_left_ms=O expired=E burst=B
 * On the first check E and B are the ticks fdinfo shows without reading; from the second on,
 * what read() returned (0 when nothing was due).
 */
#include "common.h"

#include <sys/timerfd.h>

static int tick, once, wall, expired, burst;
static unsigned long long periodic;
static int checks;
static struct timespec wall_at;

static long long ms(struct timespec t)
{
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static int timer(int clock, int flags, int settime_flags, long value_ms, long interval_ms)
{
	int fd = timerfd_create(clock, flags);
	if (fd < 0)
		fr_die("timerfd_create");
	struct itimerspec it = {
		.it_interval = {interval_ms / 1000, (interval_ms % 1000) * 1000000},
		.it_value = {value_ms / 1000, (value_ms % 1000) * 1000000},
	};
	if (settime_flags & TFD_TIMER_ABSTIME)
		it.it_value = wall_at;
	if (timerfd_settime(fd, settime_flags, &it, NULL))
		fr_die("timerfd_settime");
	return fd;
}

static unsigned long long drain(int fd)
{
	uint64_t n = 0;
	if (read(fd, &n, 8) != 8)
		return 0;
	return n;
}

static unsigned long long fdinfo_ticks(int fd)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *t = strstr(buf, "ticks:");
	return t ? strtoull(t + 6, NULL, 10) : 0;
}

static void check(void)
{
	char bad[256] = "";
	struct itimerspec cur, left;
	timerfd_gettime(tick, &cur);
	timerfd_gettime(once, &left);
	int fl = fcntl(tick, F_GETFL), fdfl = fcntl(wall, F_GETFD);
	if (!(fl & O_NONBLOCK) || !(fdfl & FD_CLOEXEC))
		snprintf(bad, sizeof(bad), "flags %o fd flags %o", fl, fdfl);
	checks++;
	unsigned long long e, b;
	if (checks == 1) {
		e = fdinfo_ticks(expired);
		b = fdinfo_ticks(burst);
	} else {
		e = drain(expired);
		b = drain(burst);
	}
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok checks=%d periodic=%llu interval_ms=%lld once_left_ms=%lld expired=%llu burst=%llu",
			  checks, periodic, ms(cur.it_interval), ms(left.it_value), e, b);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	clock_gettime(CLOCK_REALTIME, &wall_at);
	wall_at.tv_sec += 5;
	tick = timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0, 100, 100);
	once = timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0, 3000, 0);
	wall = timer(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC, TFD_TIMER_ABSTIME, 0, 0);
	expired = timer(CLOCK_MONOTONIC, TFD_NONBLOCK, 0, 10, 0);
	burst = timer(CLOCK_BOOTTIME, TFD_NONBLOCK, 0, 50, 50);
	fr_status("fds tick=%d once=%d wall=%d expired=%d burst=%d", tick, once, wall, expired, burst);
	fr_ready();
	for (unsigned long n = 1;; n++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		periodic += drain(tick);
		if (drain(once))
			fr_status("fired once");
		if (drain(wall)) {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			fr_status("fired wall late_ms=%lld", ms(now) - ms(wall_at));
		}
		fr_log_tick(n);
		usleep(10000);
	}
}
