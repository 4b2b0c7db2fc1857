/* signalfd for SIGUSR2|SIGRTMIN+6 (blocked), with SIGUSR2 and two SIGRTMIN+6 (values 7, 8)
 * pending: the mask, then reading gives exactly those with their values.
 * compat-object: signalfd with a mask and pending signals
 */
#include "common.h"

#include <sys/signalfd.h>

static int sfd;
static sigset_t mask;

static void queue_them(void)
{
	union sigval v;
	kill(getpid(), SIGUSR2);
	v.sival_int = 7;
	sigqueue(getpid(), SIGRTMIN + 6, v);
	v.sival_int = 8;
	sigqueue(getpid(), SIGRTMIN + 6, v);
}

static void check(void)
{
	struct signalfd_siginfo si[4];
	ssize_t n = read(sfd, si, sizeof(si));
	if (n != 3 * (ssize_t)sizeof(si[0])) {
		fr_status("BAD read %zd signals", n < 0 ? n : n / (ssize_t)sizeof(si[0]));
		return;
	}
	if (si[0].ssi_signo != SIGUSR2 || si[1].ssi_signo != (unsigned)SIGRTMIN + 6 || si[1].ssi_int != 7 ||
	    si[2].ssi_int != 8) {
		fr_status("BAD signals %u %u(%d) %u(%d)", si[0].ssi_signo, si[1].ssi_signo, si[1].ssi_int,
			  si[2].ssi_signo, si[2].ssi_int);
		return;
	}
	/* The mask: SIGUSR1 is not in it (it goes to the handler). */
	if (!(fcntl(sfd, F_GETFL) & O_NONBLOCK)) {
		fr_status("BAD O_NONBLOCK lost");
		return;
	}
	queue_them();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR2);
	sigaddset(&mask, SIGRTMIN + 6);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK);
	if (sfd < 0)
		fr_die("signalfd");
	queue_them();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
