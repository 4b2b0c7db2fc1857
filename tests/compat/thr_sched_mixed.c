/* Threads with different scheduling: SCHED_FIFO 7, SCHED_RR 3, SCHED_BATCH nice 5, SCHED_IDLE,
 * and the main thread SCHED_OTHER nice -3 (per-thread setpriority): sched_getscheduler,
 * sched_getparam and getpriority of each task read them back.
 * compat-object: per-thread scheduling policies, priorities and nice
 */
#include "common.h"

#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>

struct want {
	int policy, prio, nice;
};
static const struct want want[5] = {{SCHED_OTHER, 0, -3}, {SCHED_FIFO, 7, 0}, {SCHED_RR, 3, 0},
				    {SCHED_BATCH, 0, 5}, {SCHED_IDLE, 0, 0}};
static volatile pid_t tids[5];

static void apply(int i)
{
	pid_t t = (pid_t)syscall(SYS_gettid);
	struct sched_param sp = {.sched_priority = want[i].prio};
	if (sched_setscheduler(t, want[i].policy, &sp))
		fr_die("sched_setscheduler");
	if (want[i].nice)
		setpriority(PRIO_PROCESS, (id_t)t, want[i].nice);
	tids[i] = t;
}

static void *run(void *a)
{
	apply((int)(long)a);
	for (;;)
		pause();
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	for (int i = 0; i < 5; i++) {
		struct sched_param sp;
		int p = sched_getscheduler(tids[i]);
		sched_getparam(tids[i], &sp);
		errno = 0;
		int n = getpriority(PRIO_PROCESS, (id_t)tids[i]);
		if (p != want[i].policy || sp.sched_priority != want[i].prio || n != want[i].nice) {
			snprintf(why, sizeof(why), "thread %d: policy %d prio %d nice %d, want %d %d %d", i, p,
				 sp.sched_priority, n, want[i].policy, want[i].prio, want[i].nice);
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	pthread_t t;
	for (long i = 1; i < 5; i++)
		pthread_create(&t, NULL, run, (void *)i);
	for (int i = 1; i < 5; i++)
		while (!tids[i])
			usleep(1000);
	apply(0); /* after the workers were created: they do not inherit it */
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
