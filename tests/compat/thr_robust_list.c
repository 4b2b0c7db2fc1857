/* Robust futex lists: every thread's head (get_robust_list) is where glibc registered it; a
 * worker holding a robust mutex is asked to exit without unlocking it, and then the main
 * thread's lock returns EOWNERDEAD (the kernel walked the worker's list). One worker per check.
 * compat-object: robust futex list (robust mutex of an exiting thread)
 */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

#define MAXW 64
static pthread_mutex_t mtx[MAXW];
static int pipes[MAXW][2];
static volatile pid_t tids[MAXW];
static void *heads[MAXW];
static int nw, used;

static void *worker(void *a)
{
	long i = (long)a;
	pthread_mutex_lock(&mtx[i]);
	tids[i] = (pid_t)syscall(SYS_gettid);
	char c;
	read(pipes[i][0], &c, 1);
	return NULL; /* exits holding the mutex */
}

static void start(int i)
{
	pthread_mutexattr_t at;
	pthread_mutexattr_init(&at);
	pthread_mutexattr_setrobust(&at, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&mtx[i], &at);
	pipe(pipes[i]);
	pthread_t t;
	pthread_create(&t, NULL, worker, (void *)(long)i);
	pthread_detach(t);
	while (!tids[i])
		usleep(1000);
	size_t len;
	syscall(SYS_get_robust_list, tids[i], &heads[i], &len);
}

static const char *check(void)
{
	static char why[128];
	for (int i = used; i < nw; i++) {
		void *h = NULL;
		size_t len;
		if (syscall(SYS_get_robust_list, tids[i], &h, &len) || h != heads[i]) {
			snprintf(why, sizeof(why), "worker %d robust list head %p, was %p", i, h, heads[i]);
			return why;
		}
	}
	if (used >= nw)
		return "no worker left";
	int i = used++;
	write(pipes[i][1], "x", 1);
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += 3;
	int r = pthread_mutex_timedlock(&mtx[i], &t);
	if (r != EOWNERDEAD) {
		snprintf(why, sizeof(why), "lock after the owner exited: %s, want EOWNERDEAD", strerror(r));
		return why;
	}
	pthread_mutex_consistent(&mtx[i]);
	pthread_mutex_unlock(&mtx[i]);
	return NULL;
}

static void setup(void)
{
	nw = 16;
	for (int i = 0; i < nw; i++)
		start(i);
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
