/* A process-shared futex in a MAP_SHARED mapping: the child sleeps in FUTEX_WAIT (not private) on
 * it; FUTEX_WAKE from the parent wakes it (returns 1 woken waiter) and it acknowledges.
 * compat-object: shared futex waiter in a child process
 * compat-dump-args: --tree
 */
#include "common.h"

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>

struct shm {
	int word, ack, waiting;
};
static struct shm *s;

static const char *check(void)
{
	for (int i = 0; i < 500 && !__atomic_load_n(&s->waiting, __ATOMIC_SEQ_CST); i++)
		usleep(2000);
	int w = s->word + 1;
	__atomic_store_n(&s->waiting, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&s->word, w, __ATOMIC_SEQ_CST);
	long woken = syscall(SYS_futex, &s->word, FUTEX_WAKE, 1, NULL, NULL, 0);
	for (int i = 0; i < 500 && __atomic_load_n(&s->ack, __ATOMIC_SEQ_CST) != w; i++)
		usleep(2000);
	if (s->ack != w)
		return "the child did not wake";
	if (woken != 1)
		return "FUTEX_WAKE found no waiter (the child was not in futex_wait on the shared word)";
	return NULL;
}

static void setup(void)
{
	s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (fork() == 0) {
		close(fr_status_fd);
		close(fr_log_fd);
		for (;;) {
			int w = __atomic_load_n(&s->word, __ATOMIC_SEQ_CST);
			__atomic_store_n(&s->ack, w, __ATOMIC_SEQ_CST);
			__atomic_store_n(&s->waiting, 1, __ATOMIC_SEQ_CST);
			syscall(SYS_futex, &s->word, FUTEX_WAIT, w, NULL, NULL, 0);
		}
	}
	while (!s->waiting)
		usleep(1000);
	usleep(20000);
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
