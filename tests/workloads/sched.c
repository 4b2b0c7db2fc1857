/* sched STATEDIR
 *
 * Threads with every restorable scheduling policy, each set by the thread itself:
 *   main:  SCHED_BATCH, nice 7
 *   fifo:  SCHED_FIFO priority 3 | SCHED_RESET_ON_FORK, nice -3
 *   rr:    SCHED_RR priority 7, nice 2
 *   idle:  SCHED_IDLE | SCHED_RESET_ON_FORK, nice 11
 *   other: SCHED_OTHER | SCHED_RESET_ON_FORK, nice 4
 * The other threads sleep in pause(). On SIGUSR1 the main thread checks every thread with
 * sched_getscheduler, sched_getparam and getpriority by TID. Reports "ok checks=N".
 * With "deadline", one more thread runs under SCHED_DEADLINE (which a dump refuses) and
 * reports "deadline tid=T".
 */
#include "common.h"
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#ifndef SCHED_RESET_ON_FORK
#define SCHED_RESET_ON_FORK 0x40000000
#endif

struct want {
	const char *name;
	int policy; /* with SCHED_RESET_ON_FORK */
	int prio;
	int nice;
	volatile pid_t tid;
	volatile int done;
};

static struct want w[] = {
	{"main", SCHED_BATCH, 0, 7, 0, 0},
	{"fifo", SCHED_FIFO | SCHED_RESET_ON_FORK, 3, -3, 0, 0},
	{"rr", SCHED_RR, 7, 2, 0, 0},
	{"idle", SCHED_IDLE | SCHED_RESET_ON_FORK, 0, 11, 0, 0},
	{"other", SCHED_OTHER | SCHED_RESET_ON_FORK, 0, 4, 0, 0},
};
#define N (int)(sizeof(w) / sizeof(w[0]))

static void apply(struct want *x)
{
	x->tid = (pid_t)syscall(SYS_gettid);
	struct sched_param p = {x->prio};
	if (sched_setscheduler(0, x->policy, &p))
		fr_die(x->name);
	if (setpriority(PRIO_PROCESS, (id_t)x->tid, x->nice))
		fr_die("setpriority");
	x->done = 1;
}

static void *thread(void *arg)
{
	apply(arg);
	/* SSE state in use in every thread: a thread whose SSE state is still in its initial
	 * state comes back with it marked in use (XSTATE_BV), a separate matter. */
	__asm__ volatile("movq %0, %%xmm15" ::"r"(0x1234ULL) : "xmm15");
	for (;;)
		pause();
	return NULL;
}

struct attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
};

static void *deadline_thread(void *arg)
{
	(void)arg;
	struct attr a = {sizeof(a), 6 /* SCHED_DEADLINE */, 0, 0, 0, 1000000, 10000000, 10000000};
	if (syscall(SYS_sched_setattr, 0, &a, 0))
		fr_die("sched_setattr");
	fr_status("deadline tid=%d", (int)syscall(SYS_gettid));
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	/* Only the main thread takes SIGUSR1: the threads inherit the mask. */
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	/* Static stacks: stacks mapped next to other anonymous memory are a separate matter
	 * (VMA merging) this victim is not about. */
	static char stacks[N][256 * 1024] __attribute__((aligned(4096)));
	for (int i = 1; i < N; i++) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstack(&attr, stacks[i], sizeof(stacks[i]));
		pthread_t th;
		if (pthread_create(&th, &attr, thread, &w[i]))
			fr_die("pthread_create");
		while (!w[i].done)
			usleep(1000);
	}
	if (argc > 2 && strcmp(argv[2], "deadline") == 0) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstack(&attr, stacks[0], sizeof(stacks[0]));
		pthread_t th;
		if (pthread_create(&th, &attr, deadline_thread, NULL))
			fr_die("pthread_create");
	}
	pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
	apply(&w[0]);
	fr_ready();
	long checks = 0;
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		char bad[160] = "";
		for (int i = 0; i < N && !bad[0]; i++) {
			struct sched_param p = {-1};
			int pol = sched_getscheduler(w[i].tid);
			errno = 0;
			int nice = getpriority(PRIO_PROCESS, (id_t)w[i].tid);
			if (pol < 0 || sched_getparam(w[i].tid, &p) || errno)
				snprintf(bad, sizeof(bad), "%s: %s", w[i].name, strerror(errno));
			else if (pol != w[i].policy)
				snprintf(bad, sizeof(bad), "%s: policy %#x, want %#x", w[i].name, pol,
					 w[i].policy);
			else if (p.sched_priority != w[i].prio)
				snprintf(bad, sizeof(bad), "%s: priority %d, want %d", w[i].name,
					 p.sched_priority, w[i].prio);
			else if (nice != w[i].nice)
				snprintf(bad, sizeof(bad), "%s: nice %d, want %d", w[i].name, nice,
					 w[i].nice);
		}
		if (bad[0]) {
			fr_status("BAD %s", bad);
		} else {
			checks++;
			fr_status("ok checks=%ld", checks);
		}
	}
}
