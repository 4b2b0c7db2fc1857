/* Per-thread names (pthread_setname_np) on three workers and the main thread: each task's comm
 * reads its own name back.
 * compat-object: per-thread names
 */
#include "common.h"

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static const char *names[4] = {"main-fy", "wk-alpha", "wk-beta:2", "wk-γ"};
static volatile pid_t tids[4];

static void *run(void *a)
{
	long i = (long)a;
	prctl(PR_SET_NAME, names[i], 0, 0, 0);
	tids[i] = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static const char *check(void)
{
	static char why[128];
	for (int i = 0; i < 4; i++) {
		char p[64], b[32] = "";
		snprintf(p, sizeof(p), "/proc/self/task/%d/comm", tids[i]);
		int fd = open(p, O_RDONLY);
		ssize_t n = fd < 0 ? -1 : read(fd, b, sizeof(b) - 1);
		if (fd >= 0)
			close(fd);
		if (n > 0 && b[n - 1] == '\n')
			b[n - 1] = 0;
		if (strcmp(b, names[i])) {
			snprintf(why, sizeof(why), "thread %d is named '%s', want '%s'", i, b, names[i]);
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	prctl(PR_SET_NAME, names[0], 0, 0, 0);
	tids[0] = getpid();
	pthread_t t;
	for (long i = 1; i < 4; i++)
		pthread_create(&t, NULL, run, (void *)i);
	for (int i = 1; i < 4; i++)
		while (!tids[i])
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
