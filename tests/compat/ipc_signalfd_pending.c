/* A signalfd for {SIGUSR2, SIGRTMIN+4} (both blocked) with SIGUSR2 and two SIGRTMIN+4 (values
 * 10, 20) pending: the fd's sigmask (fdinfo), and reading it gives the three signals with their
 * values (then they are queued again the same way).
 * compat-object: signalfd with pending signals
 */
#include "common.h"

#include <sys/signalfd.h>

static int fd;

static void queue_them(void)
{
	kill(getpid(), SIGUSR2);
	sigqueue(getpid(), SIGRTMIN + 4, (union sigval){.sival_int = 10});
	sigqueue(getpid(), SIGRTMIN + 4, (union sigval){.sival_int = 20});
}

static const char *check(void)
{
	static char why[640];
	char p[64], b[512] = "";
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	read(f, b, sizeof(b) - 1);
	close(f);
	char *m = strstr(b, "sigmask:");
	unsigned long long want = 1ull << (SIGUSR2 - 1) | 1ull << (SIGRTMIN + 4 - 1);
	if (!m || strtoull(m + 8, NULL, 16) != want) {
		snprintf(why, sizeof(why), "fdinfo sigmask differs: %s", m ? m : b);
		return why;
	}
	struct signalfd_siginfo si[4];
	ssize_t n = read(fd, si, sizeof(si));
	queue_them();
	if (n != 3 * (ssize_t)sizeof(si[0])) {
		snprintf(why, sizeof(why), "read %zd bytes, want 3 signals", n);
		return why;
	}
	if (si[0].ssi_signo != SIGUSR2 || si[1].ssi_signo != (unsigned)SIGRTMIN + 4 ||
	    si[1].ssi_int != 10 || si[2].ssi_int != 20 || si[1].ssi_code != SI_QUEUE)
		return "the signals read differ";
	return NULL;
}

static void setup(void)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigaddset(&s, SIGRTMIN + 4);
	sigprocmask(SIG_BLOCK, &s, NULL);
	fd = signalfd(-1, &s, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		fr_die("signalfd");
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
