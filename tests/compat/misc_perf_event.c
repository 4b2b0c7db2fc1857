/* A perf event counting the process's own task-clock (software event). Its count cannot be
 * carried into a new event: the dump should refuse it, naming it.
 * compat-object: perf_event_open counter
 * compat-refuse: perf
 */
#include "common.h"

#include <linux/perf_event.h>
#include <sys/syscall.h>

static int pfd;
static uint64_t last;

static void check(void)
{
	uint64_t v = 0;
	if (read(pfd, &v, 8) != 8) {
		fr_status("BAD read: %s", strerror(errno));
		return;
	}
	if (v < last) {
		fr_status("BAD the counter went back from %llu to %llu", (unsigned long long)last,
			  (unsigned long long)v);
		return;
	}
	last = v;
	fr_status("ok count=%llu", (unsigned long long)v);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct perf_event_attr a;
	memset(&a, 0, sizeof(a));
	a.type = PERF_TYPE_SOFTWARE;
	a.size = sizeof(a);
	a.config = PERF_COUNT_SW_TASK_CLOCK;
	a.exclude_kernel = 1;
	pfd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
	if (pfd < 0)
		fr_die("perf_event_open");
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
