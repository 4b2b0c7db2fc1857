/* signalfd: SIGUSR2 and SIGRTMIN+1 are blocked and read through a non-blocking signalfd; a
 * compat-object: signalfd with pending signals
 * second, blocking signalfd reads SIGRTMIN+2. Before it is ready the victim queues itself
 * SIGRTMIN+1 with value 77, left pending across the dump. Each check reads what is queued:
 *   ok checks=N usr2=U rt=R rt2=S rtval=V mask=M
 * where U, R and S count the signals read so far, V is the last RT value, M the first fd's mask
 * as fdinfo shows it (read from /proc/self).
 */
#include "common.h"

#include <poll.h>
#include <sys/signalfd.h>

static int sfd, sfd2;
static int checks, usr2, rt, rt2;
static int rtval = -1;

static unsigned long long fdinfo_mask(int fd)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	char *m = strstr(buf, "sigmask:");
	return m ? strtoull(m + 8, NULL, 16) : 0;
}

static void check(void)
{
	char bad[256] = "";
	struct signalfd_siginfo si;
	ssize_t n;
	while ((n = read(sfd, &si, sizeof(si))) == sizeof(si)) {
		if (si.ssi_signo == SIGUSR2)
			usr2++;
		else if ((int)si.ssi_signo == SIGRTMIN + 1) {
			rt++;
			rtval = si.ssi_int;
		} else
			snprintf(bad, sizeof(bad), "unexpected signal %u", si.ssi_signo);
	}
	if (!bad[0] && errno != EAGAIN)
		snprintf(bad, sizeof(bad), "signalfd read: %s", strerror(errno));
	struct pollfd p = {.fd = sfd2, .events = POLLIN};
	if (!bad[0] && poll(&p, 1, 0) == 1) {
		if (read(sfd2, &si, sizeof(si)) == sizeof(si) && (int)si.ssi_signo == SIGRTMIN + 2)
			rt2++;
		else
			snprintf(bad, sizeof(bad), "second signalfd read %u", si.ssi_signo);
	}
	int fl = fcntl(sfd, F_GETFL), fl2 = fcntl(sfd2, F_GETFL);
	if (!bad[0] && (!(fl & O_NONBLOCK) || (fl2 & O_NONBLOCK)))
		snprintf(bad, sizeof(bad), "flags %o %o", fl, fl2);
	checks++;
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok checks=%d usr2=%d rt=%d rt2=%d rtval=%d mask=%llx", checks, usr2, rt, rt2, rtval,
			  fdinfo_mask(sfd));
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	sigset_t set, set2;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGRTMIN + 1);
	sigemptyset(&set2);
	sigaddset(&set2, SIGRTMIN + 2);
	sigset_t all = set;
	sigaddset(&all, SIGRTMIN + 2);
	if (sigprocmask(SIG_BLOCK, &all, NULL))
		fr_die("sigprocmask");
	sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	sfd2 = signalfd(-1, &set2, 0);
	if (sfd < 0 || sfd2 < 0)
		fr_die("signalfd");
	union sigval val = {.sival_int = 77};
	if (sigqueue(getpid(), SIGRTMIN + 1, val))
		fr_die("sigqueue");
	fr_status("fds sfd=%d sfd2=%d mask=%llx", sfd, sfd2, fdinfo_mask(sfd));
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(20000);
	}
}
