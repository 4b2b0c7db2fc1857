/* A pthread mutex held by a worker that sleeps holding it (trylock from main: EBUSY), and a
 * second worker waiting on a condition variable: signalled, it wakes and answers; then the
 * holder is told to release and relock.
 * compat-object: pthread mutex held and condition variable waiter
 */
#include "common.h"

#include <pthread.h>

static pthread_mutex_t held = PTHREAD_MUTEX_INITIALIZER, m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile int gen, ack, waiting;

static void *holder(void *a)
{
	(void)a;
	pthread_mutex_lock(&held);
	for (;;)
		pause();
	return NULL;
}

static void *waiter(void *a)
{
	(void)a;
	pthread_mutex_lock(&m);
	for (;;) {
		int g = gen;
		waiting = 1;
		while (gen == g)
			pthread_cond_wait(&cv, &m);
		ack = gen;
	}
	return NULL;
}

static const char *check(void)
{
	if (pthread_mutex_trylock(&held) != EBUSY)
		return "the held mutex is free";
	for (int i = 0; i < 500 && !waiting; i++)
		usleep(2000);
	pthread_mutex_lock(&m);
	waiting = 0;
	gen++;
	pthread_cond_signal(&cv);
	pthread_mutex_unlock(&m);
	for (int i = 0; i < 500 && ack != gen; i++)
		usleep(2000);
	if (ack != gen)
		return "the condition waiter did not wake";
	return NULL;
}

static void setup(void)
{
	pthread_t t;
	pthread_create(&t, NULL, holder, NULL);
	pthread_create(&t, NULL, waiter, NULL);
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
