/* Workers parked until told to finish, then joined: pthread_join returns their value (it needs
 * the kernel to clear the tid and wake the joiner, CLONE_CHILD_CLEARTID), one worker per check;
 * detached workers' exits leave nothing behind (the task count drops).
 * compat-object: thread exit and join (clear_child_tid)
 */
#include "common.h"

#include <dirent.h>
#include <pthread.h>

#define NW 24
static pthread_t w[NW];
static int go[NW][2];
static int used;

static void *run(void *a)
{
	long i = (long)a;
	char c;
	read(go[i][0], &c, 1);
	return (void *)(i * 3 + 1);
}

static int ntasks(void)
{
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static const char *check(void)
{
	static char why[64];
	if (used >= NW)
		return "no worker left";
	int before = ntasks();
	if (before != 1 + NW - used) {
		snprintf(why, sizeof(why), "%d tasks, want %d", before, 1 + NW - used);
		return why;
	}
	int i = used++;
	write(go[i][1], "x", 1);
	void *ret = NULL;
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += 3;
	int r = pthread_timedjoin_np(w[i], &ret, &t);
	if (r) {
		snprintf(why, sizeof(why), "join: %s", strerror(r));
		return why;
	}
	if (ret != (void *)(long)(i * 3 + 1))
		return "join returned another value";
	return NULL;
}

static void setup(void)
{
	for (long i = 0; i < NW; i++) {
		pipe(go[i]);
		pthread_create(&w[i], NULL, run, (void *)i);
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
