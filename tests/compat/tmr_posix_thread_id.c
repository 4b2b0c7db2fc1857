/* A POSIX timer (CLOCK_MONOTONIC, every 20 ms) with SIGEV_THREAD_ID targeting one worker thread
 * (SIGRTMIN+2, blocked in every other thread): the worker's handler keeps running, always on
 * that worker (gettid in the handler).
 * compat-object: POSIX timer with SIGEV_THREAD_ID
 * compat-libs: -lrt
 */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif
static timer_t tm;
static volatile pid_t wtid, last_tid;
static volatile int fired;

static void h(int s)
{
	(void)s;
	fired++;
	last_tid = (pid_t)syscall(SYS_gettid);
}

static void *worker(void *a)
{
	(void)a;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 2);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	wtid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	int before = fired;
	double t0 = fr_now();
	while (fired < before + 3 && fr_now() - t0 < 2.0)
		usleep(5000);
	if (fired < before + 3) {
		snprintf(why, sizeof(why), "%d expirations in 2 s", fired - before);
		return why;
	}
	if (last_tid != wtid) {
		snprintf(why, sizeof(why), "the handler ran on %d, not the worker %d", last_tid, wtid);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	fr_install(SIGRTMIN + 2, h, SA_RESTART);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGRTMIN + 2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	while (!wtid)
		usleep(1000);
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 2;
	ev.sigev_notify_thread_id = wtid;
	if (timer_create(CLOCK_MONOTONIC, &ev, &tm))
		fr_die("timer_create");
	struct itimerspec v = {{0, 20000000}, {0, 20000000}};
	timer_settime(tm, 0, &v, NULL);
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
