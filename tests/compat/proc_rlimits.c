/* Every resource limit lowered to its own soft/hard pair (soft < hard where possible):
 * getrlimit of each reads them back.
 * compat-object: resource limits (all 16)
 */
#include "common.h"

#include <sys/resource.h>

static struct rlimit want[RLIM_NLIMITS];

static const char *check(void)
{
	static char why[128];
	for (int r = 0; r < RLIM_NLIMITS; r++) {
		struct rlimit rl;
		getrlimit(r, &rl);
		if (rl.rlim_cur != want[r].rlim_cur || rl.rlim_max != want[r].rlim_max) {
			snprintf(why, sizeof(why), "limit %d is %llu/%llu want %llu/%llu", r,
				 (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
				 (unsigned long long)want[r].rlim_cur, (unsigned long long)want[r].rlim_max);
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	rlim_t v[RLIM_NLIMITS][2] = {
		[RLIMIT_CPU] = {100000, 200000},
		[RLIMIT_FSIZE] = {1ull << 40, 1ull << 41},
		[RLIMIT_DATA] = {1ull << 36, 1ull << 37},
		[RLIMIT_STACK] = {8 << 20, 64 << 20},
		[RLIMIT_CORE] = {12345 * 4096, 1ull << 30},
		[RLIMIT_RSS] = {1ull << 33, 1ull << 34},
		[RLIMIT_NPROC] = {4001, 4002},
		[RLIMIT_NOFILE] = {777, 999},
		[RLIMIT_MEMLOCK] = {1 << 24, 1 << 25},
		[RLIMIT_AS] = {1ull << 42, 1ull << 43},
		[RLIMIT_LOCKS] = {333, 444},
		[RLIMIT_SIGPENDING] = {1111, 2222},
		[RLIMIT_MSGQUEUE] = {819200, 819201},
		[RLIMIT_NICE] = {11, 12},
		[RLIMIT_RTPRIO] = {21, 22},
		[RLIMIT_RTTIME] = {9000000, 10000000},
	};
	for (int r = 0; r < RLIM_NLIMITS; r++) {
		struct rlimit now;
		getrlimit(r, &now);
		want[r].rlim_cur = v[r][0];
		want[r].rlim_max = v[r][1];
		/* never above the hard limit we were given */
		if (now.rlim_max != RLIM_INFINITY && want[r].rlim_max > now.rlim_max) {
			want[r].rlim_max = now.rlim_max - now.rlim_max / 8;
			want[r].rlim_cur = want[r].rlim_max / 2;
		}
		if (setrlimit(r, &want[r]))
			fr_die("setrlimit");
	}
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
