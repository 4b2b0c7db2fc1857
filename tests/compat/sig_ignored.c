/* SIGINT, SIGHUP, SIGPIPE, SIGTTOU and SIGRTMIN+7 ignored (SIG_IGN): sigaction and the SigIgn
 * line of status; SIGTERM and SIGQUIT default; a raised SIGINT is ignored.
 * compat-object: ignored signals
 */
#include "common.h"

static const int ign[] = {SIGINT, SIGHUP, SIGPIPE, SIGTTOU};

static const char *check(void)
{
	static char why[128];
	struct sigaction sa;
	for (unsigned i = 0; i < 4; i++) {
		sigaction(ign[i], NULL, &sa);
		if (sa.sa_handler != SIG_IGN)
			return "a signal is not ignored any more";
	}
	sigaction(SIGRTMIN + 7, NULL, &sa);
	if (sa.sa_handler != SIG_IGN)
		return "SIGRTMIN+7 is not ignored";
	sigaction(SIGTERM, NULL, &sa);
	if (sa.sa_handler != SIG_DFL)
		return "SIGTERM is not default";
	char b[4096];
	int fd = open("/proc/self/status", O_RDONLY);
	ssize_t n = read(fd, b, sizeof(b) - 1);
	close(fd);
	b[n > 0 ? n : 0] = 0;
	char *p = strstr(b, "SigIgn:");
	unsigned long long want = 0;
	for (unsigned i = 0; i < 4; i++)
		want |= 1ull << (ign[i] - 1);
	want |= 1ull << (SIGRTMIN + 7 - 1);
	/* 32 and 33 are glibc's own (it does not let them be set); the rest must be exactly these */
	unsigned long long got = p ? strtoull(p + 7, NULL, 16) : ~0ull, own = 3ull << 31;
	if ((got & ~own) != want) {
		snprintf(why, sizeof(why), "SigIgn %llx want %llx", got & ~own, want);
		return why;
	}
	raise(SIGINT);
	return NULL;
}

static void setup(void)
{
	/* a clean start: whatever was inherited as ignored goes back to default */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGUSR1 && sig != SIGKILL && sig != SIGSTOP && (sig < 32 || sig >= SIGRTMIN))
			signal(sig, SIG_DFL);
	for (unsigned i = 0; i < 4; i++)
		signal(ign[i], SIG_IGN);
	signal(SIGRTMIN + 7, SIG_IGN);
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
