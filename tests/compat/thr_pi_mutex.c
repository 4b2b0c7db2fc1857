/* A priority-inheritance mutex (PTHREAD_PRIO_INHERIT) held by one worker and waited for by
 * another (blocked in FUTEX_LOCK_PI): the futex word is the holder's tid with FUTEX_WAITERS set;
 * main's trylock gets EBUSY; when the holder is told to unlock, the waiter gets the lock.
 * One holder/waiter pair per check.
 * compat-object: PI futex (held, with a waiter)
 */
#include "common.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>

#define NP 24
struct pair {
	pthread_mutex_t m;
	int go[2];
	volatile pid_t holder;
	volatile int got;
};
static struct pair pairs[NP];
static int used;

static void *holder(void *a)
{
	struct pair *p = a;
	pthread_mutex_lock(&p->m);
	p->holder = (pid_t)syscall(SYS_gettid);
	char c;
	read(p->go[0], &c, 1);
	pthread_mutex_unlock(&p->m);
	return NULL;
}

static void *waiter(void *a)
{
	struct pair *p = a;
	pthread_mutex_lock(&p->m);
	p->got = 1;
	pthread_mutex_unlock(&p->m);
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	for (int i = used; i < NP; i++) {
		unsigned w = (unsigned)pairs[i].m.__data.__lock;
		if ((w & FUTEX_TID_MASK) != (unsigned)pairs[i].holder || !(w & FUTEX_WAITERS)) {
			snprintf(why, sizeof(why), "pair %d: futex word %#x, holder %d", i, w, pairs[i].holder);
			return why;
		}
	}
	if (used >= NP)
		return "no pair left";
	struct pair *p = &pairs[used++];
	if (pthread_mutex_trylock(&p->m) != EBUSY)
		return "the held PI mutex is free";
	write(p->go[1], "x", 1);
	for (int i = 0; i < 500 && !p->got; i++)
		usleep(2000);
	if (!p->got)
		return "the waiter did not get the mutex after the unlock";
	return NULL;
}

static void setup(void)
{
	pthread_mutexattr_t at;
	pthread_mutexattr_init(&at);
	pthread_mutexattr_setprotocol(&at, PTHREAD_PRIO_INHERIT);
	for (int i = 0; i < NP; i++) {
		struct pair *p = &pairs[i];
		pthread_mutex_init(&p->m, &at);
		pipe(p->go);
		pthread_t t;
		pthread_create(&t, NULL, holder, p);
		while (!p->holder)
			usleep(500);
		pthread_create(&t, NULL, waiter, p);
	}
	for (int i = 0; i < NP; i++)
		while (!((unsigned)pairs[i].m.__data.__lock & FUTEX_WAITERS))
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
