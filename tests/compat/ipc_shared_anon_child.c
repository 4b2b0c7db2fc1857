/* An anonymous shared mapping inherited by a child (in the tree): a counter the child increments
 * on request is seen by the parent, and bytes the parent writes are seen by the child.
 * compat-object: anonymous shared memory between parent and child
 * compat-dump-args: --tree
 */
#include "common.h"

#include <sys/mman.h>

struct shm {
	volatile int req, ack;
	volatile unsigned char data[4096];
};
static struct shm *s;

static const char *check(void)
{
	int r = s->req + 1;
	s->data[r % 4096] = (unsigned char)r;
	__atomic_store_n(&s->req, r, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 500 && __atomic_load_n(&s->ack, __ATOMIC_SEQ_CST) != r; i++)
		usleep(2000);
	if (s->ack != r)
		return "the child does not see the shared request (the mapping is no longer shared)";
	return NULL;
}

static void setup(void)
{
	s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		fr_die("mmap");
	if (fork() == 0) {
		close(fr_status_fd);
		close(fr_log_fd);
		for (;;) {
			int r = __atomic_load_n(&s->req, __ATOMIC_SEQ_CST);
			if (r != s->ack && s->data[r % 4096] == (unsigned char)r)
				__atomic_store_n(&s->ack, r, __ATOMIC_SEQ_CST);
			usleep(2000);
		}
	}
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
