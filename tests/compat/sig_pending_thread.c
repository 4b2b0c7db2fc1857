/* Signals pending for one thread only: SIGUSR2 (tgkill) and SIGRTMIN+3 twice with values 5, 6
 * (rt_tgsigqueueinfo) to a worker that blocks them: that task's SigPnd shows them, the process's
 * ShdPnd does not; on request the worker takes them (sigtimedwait), reports, and re-queues.
 * compat-object: pending signals of one thread (standard and real-time with values)
 */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

static volatile pid_t tid;
static int req[2], rep[2];

static void queue_them(void)
{
	syscall(SYS_tgkill, getpid(), tid, SIGUSR2);
	for (int v = 5; v <= 6; v++) {
		siginfo_t si;
		memset(&si, 0, sizeof(si));
		si.si_signo = SIGRTMIN + 3;
		si.si_code = SI_QUEUE;
		si.si_pid = getpid();
		si.si_uid = getuid();
		si.si_value.sival_int = v;
		syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, SIGRTMIN + 3, &si);
	}
}

static void *worker(void *a)
{
	(void)a;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigaddset(&s, SIGRTMIN + 3);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	tid = (pid_t)syscall(SYS_gettid);
	for (;;) {
		char c;
		if (read(req[0], &c, 1) != 1)
			continue;
		struct timespec z = {0, 0};
		siginfo_t si;
		int r[4] = {0, 0, 0, 0}, n = 0;
		while (n < 3 && sigtimedwait(&s, &si, &z) > 0)
			r[n++] = si.si_signo == SIGUSR2 ? 1000 : si.si_value.sival_int;
		r[3] = n;
		write(rep[1], r, sizeof(r));
	}
	return NULL;
}

static unsigned long long field(const char *path, const char *key)
{
	char b[4096];
	int fd = open(path, O_RDONLY);
	ssize_t n = read(fd, b, sizeof(b) - 1);
	close(fd);
	b[n > 0 ? n : 0] = 0;
	char *s = strstr(b, key);
	return s ? strtoull(s + strlen(key), NULL, 16) : ~0ull;
}

static const char *check(void)
{
	static char why[128];
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/task/%d/status", tid);
	unsigned long long want = 1ull << (SIGUSR2 - 1) | 1ull << (SIGRTMIN + 3 - 1);
	if (field(p, "SigPnd:") != want)
		return "the thread's SigPnd differs";
	if (field("/proc/self/status", "ShdPnd:") != 0)
		return "ShdPnd is not empty";
	write(req[1], "x", 1);
	int r[4];
	if (read(rep[0], r, sizeof(r)) != sizeof(r))
		return "no answer";
	queue_them();
	if (r[3] != 3 || r[0] != 1000 || r[1] != 5 || r[2] != 6) {
		snprintf(why, sizeof(why), "worker took %d signals: %d %d %d", r[3], r[0], r[1], r[2]);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	pipe(req);
	pipe(rep);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	while (!tid)
		usleep(1000);
	queue_them();
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
