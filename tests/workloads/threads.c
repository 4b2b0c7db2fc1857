/* threads STATEDIR NTHREADS
 * compat-object: threads with their own state
 * compat-args: 4
 *
 * Worker threads share a mutex and condition variable, keep a counter in TLS that must match
 * a shared one, check their TID never changes, and keep their own signal mask (odd workers
 * block SIGUSR2). They block in turn in nanosleep, poll with a timeout, and a timed condition
 * wait, so a dump finds them inside those calls. The main thread ticks the log; on SIGUSR1 it
 * checks every worker made progress and reports "ok threads=N tasks=M".
 */
#include "common.h"
#include <poll.h>
#include <pthread.h>
#include <dirent.h>
#include <sys/syscall.h>

#define MAX 64
static int nthreads;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile long counter[MAX];
static pid_t tids[MAX];
static volatile int bad;
static char bad_what[128];
static __thread long tls_count;

static void fail(const char *what, long i)
{
	if (!bad)
		snprintf(bad_what, sizeof(bad_what), "%s thread=%ld", what, i);
	bad = 1;
}

static void *worker(void *arg)
{
	long i = (long)arg;
	tids[i] = (pid_t)syscall(SYS_gettid);
	sigset_t set;
	sigemptyset(&set);
	if (i % 2)
		sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGUSR1); /* the main thread takes the checks */
	pthread_sigmask(SIG_SETMASK, &set, NULL);
	for (;;) {
		pthread_mutex_lock(&mu);
		counter[i]++;
		tls_count++;
		pthread_cond_broadcast(&cv);
		pthread_mutex_unlock(&mu);
		if (tls_count != counter[i])
			fail("tls", i);
		if ((pid_t)syscall(SYS_gettid) != tids[i])
			fail("tid", i);
		sigset_t cur;
		pthread_sigmask(SIG_BLOCK, NULL, &cur);
		if (sigismember(&cur, SIGUSR2) != (int)(i % 2))
			fail("sigmask", i);
		switch (i % 3) {
		case 0: {
			struct timespec ts = {0, 2000000};
			nanosleep(&ts, NULL);
			break;
		}
		case 1:
			poll(NULL, 0, 3);
			break;
		default: {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_nsec += 4000000;
			if (until.tv_nsec >= 1000000000) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000;
			}
			pthread_mutex_lock(&mu);
			pthread_cond_timedwait(&cv, &mu, &until);
			pthread_mutex_unlock(&mu);
		}
		}
	}
	return NULL;
}

static int count_tasks(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	nthreads = argc > 2 ? atoi(argv[2]) : 8;
	if (nthreads < 1 || nthreads > MAX)
		nthreads = 8;
	for (long i = 0; i < nthreads; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)i))
			fr_die("pthread_create");
	}
	for (int i = 0; i < nthreads; i++)
		while (!tids[i])
			usleep(1000);
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			long before[MAX];
			for (int i = 0; i < nthreads; i++)
				before[i] = counter[i];
			usleep(100000);
			int stalled = -1;
			for (int i = 0; i < nthreads; i++)
				if (counter[i] == before[i])
					stalled = i;
			if (bad)
				fr_status("BAD %s", bad_what);
			else if (stalled >= 0)
				fr_status("BAD stalled thread=%d", stalled);
			else
				fr_status("ok threads=%d tasks=%d pid=%d", nthreads, count_tasks(), (int)getpid());
		}
	}
}
