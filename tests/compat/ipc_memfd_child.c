/* A memfd mapped shared in the parent and a child (the child got the fd and the mapping by
 * fork, the parent closed its fd): writes of one side are seen by the other.
 * compat-object: memfd shared between parent and child
 * compat-dump-args: --tree
 */
#include "common.h"

#include <sys/mman.h>

static volatile int *m;

static const char *check(void)
{
	int r = m[0] + 1;
	__atomic_store_n(&m[0], r, __ATOMIC_SEQ_CST);
	for (int i = 0; i < 500 && __atomic_load_n(&m[1], __ATOMIC_SEQ_CST) != r; i++)
		usleep(2000);
	if (m[1] != r)
		return "the child does not see the memfd mapping (no longer shared)";
	return NULL;
}

static void setup(void)
{
	int fd = memfd_create("compat-child", MFD_CLOEXEC);
	ftruncate(fd, 4096);
	m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (fork() == 0) {
		close(fr_status_fd);
		close(fr_log_fd);
		for (;;) {
			int r = __atomic_load_n(&m[0], __ATOMIC_SEQ_CST);
			__atomic_store_n(&m[1], r, __ATOMIC_SEQ_CST);
			usleep(2000);
		}
	}
	close(fd);
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
