/* proc_timer_thread STATEDIR
 *
 * A POSIX timer with SIGEV_THREAD_ID: every 10 ms it signals (SIGRTMIN+2) one worker thread,
 * never the main thread. The handler records which thread it ran on. On SIGUSR1 it checks
 * that the timer fired since the last check (waiting up to 2 s for it), only ever on the worker
 * (by TID), and that /proc/self/timers still names the worker as the target ("signal/tid.N").
 * Reports "ok fired=N worker=TID" or "BAD ...".
 */
#include "common.h"
#include <pthread.h>
#include <sys/syscall.h>

static volatile pid_t worker_tid;
static volatile sig_atomic_t on_worker, elsewhere;
static timer_t timer;

static void on_timer(int s)
{
	(void)s;
	if (syscall(SYS_gettid) == worker_tid)
		on_worker++;
	else
		elsewhere++;
}

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static void check(void)
{
	static int last;
	/* The worker may not have been scheduled since the last check on a busy machine: give the
	 * timer (every 10 ms) up to 2 s to fire before calling it dead. */
	for (int waited = 0; on_worker == last && waited < 200; waited++)
		usleep(10000);
	int now = on_worker;
	char buf[4096], want[64];
	int fd = open("/proc/self/timers", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	buf[n < 0 ? 0 : n] = 0;
	snprintf(want, sizeof(want), "signal/tid.%d", (int)worker_tid);
	if (elsewhere)
		fr_status("BAD timer signal ran %d times on another thread than the worker %d",
			  (int)elsewhere, (int)worker_tid);
	else if (now == last)
		fr_status("BAD timer did not fire on the worker since the last check");
	else if (!strstr(buf, want))
		fr_status("BAD /proc/self/timers does not name %s: %s", want, buf);
	else
		fr_status("ok fired=%d worker=%d", now, (int)worker_tid);
	last = now;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGRTMIN + 2, on_timer, SA_RESTART);
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		fr_die("pthread_create");
	while (!worker_tid)
		usleep(1000);
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGRTMIN + 2;
	ev._sigev_un._tid = worker_tid;
	if (timer_create(CLOCK_MONOTONIC, &ev, &timer))
		fr_die("timer_create");
	struct itimerspec ts = {{0, 10000000}, {0, 10000000}};
	if (timer_settime(timer, 0, &ts, NULL))
		fr_die("timer_settime");
	/* Ready once the timer has fired on the worker (up to 5 s on a busy machine). */
	for (int waited = 0; !on_worker && waited < 500; waited++)
		usleep(10000);
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
