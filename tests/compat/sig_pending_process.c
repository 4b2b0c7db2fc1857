/* SIGUSR2 and SIGHUP pending for the process (kill while blocked by every thread): sigpending
 * and ShdPnd show them; nothing is pending for the thread alone.
 * compat-object: pending standard signals (process-wide)
 */
#include "common.h"

static const char *check(void)
{
	sigset_t p;
	sigpending(&p);
	if (!sigismember(&p, SIGUSR2) || !sigismember(&p, SIGHUP) || sigismember(&p, SIGTERM))
		return "the pending set differs";
	char b[4096];
	int fd = open("/proc/self/status", O_RDONLY);
	ssize_t n = read(fd, b, sizeof(b) - 1);
	close(fd);
	b[n > 0 ? n : 0] = 0;
	char *s = strstr(b, "ShdPnd:"), *t = strstr(b, "SigPnd:");
	unsigned long long want = 1ull << (SIGUSR2 - 1) | 1ull << (SIGHUP - 1);
	if (!s || strtoull(s + 7, NULL, 16) != want)
		return "ShdPnd differs";
	if (!t || strtoull(t + 7, NULL, 16) != 0)
		return "SigPnd (thread) is not empty";
	return NULL;
}

static void setup(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigaddset(&s, SIGHUP);
	sigprocmask(SIG_BLOCK, &s, NULL);
	kill(getpid(), SIGUSR2);
	kill(getpid(), SIGHUP);
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
