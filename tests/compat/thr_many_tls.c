/* 64 threads, each with a __thread value and a TLS array of its own and its tid remembered: on
 * request (a shared barrier) each checks its TLS and its gettid(), and reports.
 * compat-object: many threads with thread-local storage
 */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

#define NT 64
static __thread long tls_v;
static __thread char tls_arr[256];
static pid_t tids[NT];
static volatile int bad[NT], seen[NT];
static pthread_barrier_t go, done;

static void *run(void *arg)
{
	long i = (long)arg;
	tls_v = i * 1000 + 7;
	memset(tls_arr, (int)i, sizeof(tls_arr));
	tids[i] = (pid_t)syscall(SYS_gettid);
	pthread_barrier_wait(&done);
	for (;;) {
		pthread_barrier_wait(&go);
		int b = tls_v != i * 1000 + 7;
		for (int k = 0; k < 256; k++)
			b |= tls_arr[k] != (char)i;
		b |= (pid_t)syscall(SYS_gettid) != tids[i];
		bad[i] = b;
		seen[i]++;
		pthread_barrier_wait(&done);
	}
	return NULL;
}

static const char *check(void)
{
	static char why[64];
	pthread_barrier_wait(&go);
	pthread_barrier_wait(&done);
	for (int i = 0; i < NT; i++)
		if (bad[i]) {
			snprintf(why, sizeof(why), "thread %d: TLS or tid differ", i);
			return why;
		}
	if (tls_v != -1)
		return "main thread TLS differs";
	return NULL;
}

static void setup(void)
{
	pthread_barrier_init(&go, NULL, NT + 1);
	pthread_barrier_init(&done, NULL, NT + 1);
	tls_v = -1;
	pthread_attr_t a;
	pthread_attr_init(&a);
	pthread_attr_setstacksize(&a, 64 * 1024);
	for (long i = 0; i < NT; i++) {
		pthread_t t;
		if (pthread_create(&t, &a, run, (void *)i))
			fr_die("pthread_create");
	}
	pthread_barrier_wait(&done);
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
