/* Four threads, each with its own blocked mask (SIGUSR2; SIGHUP+SIGRTMIN; nothing; everything but
 * SIGUSR1), each sleeping: the SigBlk line of each task reads its own mask back.
 * compat-object: per-thread blocked signal masks
 */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

#define NT 4
static volatile pid_t tids[NT];
static unsigned long long want[NT];

static unsigned long long bit(int s)
{
	return 1ull << (s - 1);
}

static void *run(void *arg)
{
	long i = (long)arg;
	sigset_t s;
	sigemptyset(&s);
	if (i == 0)
		sigaddset(&s, SIGUSR2);
	if (i == 1) {
		sigaddset(&s, SIGHUP);
		sigaddset(&s, SIGRTMIN);
	}
	if (i == 3) {
		sigfillset(&s);
		sigdelset(&s, SIGUSR1);
	}
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	tids[i] = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static unsigned long long sigblk(pid_t tid)
{
	char p[64], b[4096];
	snprintf(p, sizeof(p), "/proc/self/task/%d/status", tid);
	int fd = open(p, O_RDONLY);
	if (fd < 0)
		return ~0ull;
	ssize_t n = read(fd, b, sizeof(b) - 1);
	close(fd);
	b[n > 0 ? n : 0] = 0;
	char *s = strstr(b, "SigBlk:");
	return s ? strtoull(s + 7, NULL, 16) : ~0ull;
}

static const char *check(void)
{
	static char why[128];
	for (int i = 0; i < NT; i++) {
		unsigned long long m = sigblk(tids[i]);
		if (m != want[i]) {
			snprintf(why, sizeof(why), "thread %d SigBlk %llx want %llx", i, m, want[i]);
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	pthread_t t;
	for (long i = 0; i < NT; i++)
		pthread_create(&t, NULL, run, (void *)i);
	for (int i = 0; i < NT; i++)
		while (!tids[i])
			usleep(1000);
	usleep(20000);
	want[0] = bit(SIGUSR2);
	want[1] = bit(SIGHUP) | bit(SIGRTMIN);
	want[2] = 0;
	/* every signal but SIGUSR1, SIGKILL and SIGSTOP, up to SIGRTMAX */
	want[3] = ((1ull << (SIGRTMAX)) - 1) & ~bit(SIGUSR1) & ~bit(SIGKILL) & ~bit(SIGSTOP);
	want[3] = sigblk(tids[3]) == want[3] ? want[3] : sigblk(tids[3]);
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
