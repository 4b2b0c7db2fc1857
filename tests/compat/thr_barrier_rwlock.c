/* Five workers parked in pthread_barrier_wait (a barrier of 6), and a rwlock held for reading
 * by two other threads: main's tryrdlock succeeds, trywrlock gets EBUSY; main joining the
 * barrier releases all five, each counts once.
 * compat-object: pthread barrier waiters and rwlock readers
 */
#include "common.h"

#include <pthread.h>

static pthread_barrier_t b;
static pthread_rwlock_t rw = PTHREAD_RWLOCK_INITIALIZER;
static volatile int passes;

static void *barrier_worker(void *a)
{
	(void)a;
	for (;;) {
		pthread_barrier_wait(&b);
		__atomic_add_fetch(&passes, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static void *reader(void *a)
{
	(void)a;
	pthread_rwlock_rdlock(&rw);
	for (;;)
		pause();
	return NULL;
}

static const char *check(void)
{
	if (pthread_rwlock_trywrlock(&rw) != EBUSY)
		return "the rwlock can be write-locked (readers lost)";
	if (pthread_rwlock_tryrdlock(&rw))
		return "tryrdlock failed";
	pthread_rwlock_unlock(&rw);
	int before = passes;
	pthread_barrier_wait(&b);
	for (int i = 0; i < 500 && passes < before + 5; i++)
		usleep(2000);
	if (passes != before + 5)
		return "the barrier did not release five waiters";
	usleep(20000);
	return NULL;
}

static void setup(void)
{
	pthread_barrier_init(&b, NULL, 6);
	pthread_t t;
	for (int i = 0; i < 5; i++)
		pthread_create(&t, NULL, barrier_worker, NULL);
	for (int i = 0; i < 2; i++)
		pthread_create(&t, NULL, reader, NULL);
	usleep(50000);
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
