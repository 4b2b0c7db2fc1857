/* CPU affinity restricted to the last CPU: sched_getaffinity reads it back and the process runs
 * there (sched_getcpu).
 * compat-object: CPU affinity mask
 */
#include "common.h"

#include <sched.h>

static int cpu;

static const char *check(void)
{
	cpu_set_t s;
	if (sched_getaffinity(0, sizeof(s), &s))
		return "sched_getaffinity";
	if (CPU_COUNT(&s) != 1 || !CPU_ISSET(cpu, &s))
		return "the affinity mask differs";
	if (sched_getcpu() != cpu)
		return "running on another CPU";
	return NULL;
}

static void setup(void)
{
	cpu = (int)sysconf(_SC_NPROCESSORS_ONLN) - 1;
	if (cpu < 1)
		fr_die("needs 2 CPUs");
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	if (sched_setaffinity(0, sizeof(s), &s))
		fr_die("sched_setaffinity");
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
