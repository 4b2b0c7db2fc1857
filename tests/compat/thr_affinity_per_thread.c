/* Per-thread CPU affinity: the main thread on CPU 0 only, a worker on the last CPU only, another
 * on both: each task's sched_getaffinity reads its own mask back.
 * compat-object: per-thread CPU affinity
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>

static volatile pid_t tids[3];
static cpu_set_t want[3];

static void *run(void *a)
{
	long i = (long)a;
	sched_setaffinity(0, sizeof(cpu_set_t), &want[i]);
	tids[i] = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static const char *check(void)
{
	static char why[64];
	for (int i = 0; i < 3; i++) {
		cpu_set_t s;
		if (sched_getaffinity(tids[i], sizeof(s), &s) || !CPU_EQUAL(&s, &want[i])) {
			snprintf(why, sizeof(why), "thread %d: affinity differs (%d CPUs)", i, CPU_COUNT(&s));
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	int last = (int)sysconf(_SC_NPROCESSORS_ONLN) - 1;
	if (last < 1)
		fr_die("needs 2 CPUs");
	for (int i = 0; i < 3; i++)
		CPU_ZERO(&want[i]);
	CPU_SET(0, &want[0]);
	CPU_SET(last, &want[1]);
	CPU_SET(0, &want[2]);
	CPU_SET(last, &want[2]);
	sched_setaffinity(0, sizeof(cpu_set_t), &want[0]);
	tids[0] = getpid();
	pthread_t t;
	for (long i = 1; i < 3; i++)
		pthread_create(&t, NULL, run, (void *)i);
	for (int i = 1; i < 3; i++)
		while (!tids[i])
			usleep(1000);
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
