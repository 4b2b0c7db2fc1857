/* Three threads sleeping in FUTEX_WAIT_PRIVATE on one word (and one with a bitset on another):
 * FUTEX_WAKE wakes exactly the three (returns 3), each acknowledges and goes back to sleep.
 * compat-object: futex waiters (private, and FUTEX_WAIT_BITSET)
 */
#include "common.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>

static int word, word2;
static volatile int acks, waiting;

static void *run(void *a)
{
	long bs = (long)a;
	for (;;) {
		int w = __atomic_load_n(bs ? &word2 : &word, __ATOMIC_SEQ_CST);
		__atomic_add_fetch(&waiting, 1, __ATOMIC_SEQ_CST);
		if (bs)
			syscall(SYS_futex, &word2, FUTEX_WAIT_BITSET_PRIVATE, w, NULL, NULL, 0x4);
		else
			syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, w, NULL, NULL, 0);
		__atomic_add_fetch(&acks, 1, __ATOMIC_SEQ_CST);
	}
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	for (int i = 0; i < 500 && waiting < 4; i++)
		usleep(2000);
	usleep(20000);
	waiting = 0;
	acks = 0;
	__atomic_add_fetch(&word, 1, __ATOMIC_SEQ_CST);
	long w = syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 10, NULL, NULL, 0);
	__atomic_add_fetch(&word2, 1, __ATOMIC_SEQ_CST);
	long w2 = syscall(SYS_futex, &word2, FUTEX_WAKE_BITSET_PRIVATE, 10, NULL, NULL, 0x4);
	for (int i = 0; i < 500 && acks < 4; i++)
		usleep(2000);
	if (w != 3 || w2 != 1 || acks != 4) {
		snprintf(why, sizeof(why), "woke %ld + %ld waiters, %d acknowledged; want 3 + 1", w, w2, acks);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	pthread_t t;
	for (int i = 0; i < 3; i++)
		pthread_create(&t, NULL, run, NULL);
	pthread_create(&t, NULL, run, (void *)1);
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
