/* The restartable-sequences area glibc registers for the main thread: after the restore it is
 * still registered (re-registering the same area fails with EBUSY) and the kernel keeps its cpu_id
 * up to date (equal to sched_getcpu(), not RSEQ_CPU_ID_UNINITIALIZED).
 * compat-object: rseq registration
 */
#include "common.h"

#include <linux/rseq.h>
#include <sched.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

static const char *check(void)
{
	static char why[128];
	if (__rseq_size == 0)
		return "glibc did not register rseq";
	struct rseq *r = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
	int cpu = sched_getcpu();
	int id = (int)r->cpu_id;
	if (id != cpu) {
		snprintf(why, sizeof(why), "rseq cpu_id %d, sched_getcpu %d", id, cpu);
		return why;
	}
	/* Registering the same area again: EBUSY while registered; EINVAL (other signature) etc. */
	long rc = syscall(SYS_rseq, r, __rseq_size < 32 ? 32 : __rseq_size, 0, RSEQ_SIG);
	if (rc != -1 || errno != EBUSY) {
		snprintf(why, sizeof(why), "re-registration gave %ld errno %d (not registered any more)", rc, errno);
		if (rc == 0)
			syscall(SYS_rseq, r, __rseq_size < 32 ? 32 : __rseq_size, RSEQ_FLAG_UNREGISTER, RSEQ_SIG);
		return why;
	}
	return NULL;
}

static void setup(void)
{
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
