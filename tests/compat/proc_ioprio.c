/* I/O priority best-effort level 6 for the process (ioprio_set): ioprio_get reads it back.
 * compat-object: I/O priority (ioprio)
 */
#include "common.h"

#include <sys/syscall.h>

#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_CLASS_BE 2
#define PRIO(c, l) (((c) << 13) | (l))

static const char *check(void)
{
	static char why[64];
	long p = syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
	if (p != PRIO(IOPRIO_CLASS_BE, 6)) {
		snprintf(why, sizeof(why), "ioprio %#lx want %#x", p, PRIO(IOPRIO_CLASS_BE, 6));
		return why;
	}
	return NULL;
}

static void setup(void)
{
	if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, PRIO(IOPRIO_CLASS_BE, 6)))
		fr_die("ioprio_set");
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
