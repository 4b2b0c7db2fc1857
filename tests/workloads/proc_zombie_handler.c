/* proc_zombie_handler STATEDIR
 *
 * A parent with a SIGCHLD handler (SA_SIGINFO) and two children it has not reaped yet: one
 * exited with code 7, one killed by SIGTERM (and a third child that lives on). The handler ran once for each. On SIGUSR1 it
 * checks that the handler ran exactly twice (a restore must not send SIGCHLD again), that
 * both are still zombies (state Z) and that waitid(WNOWAIT) reports each one's end as it was.
 * With "blocked": SIGCHLD is blocked all along, so the handler never runs and SIGCHLD stays
 * pending (sigpending), which must still be so after a restore.
 * Dump it with --tree. Reports "ok exited=PID killed=PID sigchld=2" or "BAD ...".
 */
#include "common.h"
#include <sys/prctl.h>
#include <sys/wait.h>

static pid_t exited, killed, alive_child;
static volatile sig_atomic_t sigchld;
static int blocked, want;

static void on_chld(int s, siginfo_t *si, void *uc)
{
	(void)s;
	(void)si;
	(void)uc;
	sigchld++;
}

static char state_of(pid_t p)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)p);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return '?';
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = 0;
	char *q = strrchr(buf, ')');
	return q && q[1] == ' ' ? q[2] : '?';
}

static void check(void)
{
	if (sigchld != want)
		return fr_status("BAD the SIGCHLD handler ran %d times, not %d", (int)sigchld, want);
	sigset_t pend;
	sigpending(&pend);
	if (blocked && !sigismember(&pend, SIGCHLD))
		return fr_status("BAD the blocked SIGCHLD is no longer pending");
	if (state_of(exited) != 'Z' || state_of(killed) != 'Z')
		return fr_status("BAD children in states %c %c, not zombies", state_of(exited),
				 state_of(killed));
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, exited, &si, WEXITED | WNOWAIT | WNOHANG) || si.si_pid != exited ||
	    si.si_code != CLD_EXITED || si.si_status != 7)
		return fr_status("BAD waitid on the exited child: code %d status %d", si.si_code,
				 si.si_status);
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, killed, &si, WEXITED | WNOWAIT | WNOHANG) || si.si_pid != killed ||
	    si.si_code != CLD_KILLED || si.si_status != SIGTERM)
		return fr_status("BAD waitid on the killed child: code %d status %d", si.si_code,
				 si.si_status);
	fr_status("ok exited=%d killed=%d sigchld=%d", (int)exited, (int)killed, (int)sigchld);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_chld;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGCHLD, &sa, NULL))
		fr_die("sigaction");
	blocked = argc > 2 && !strcmp(argv[2], "blocked");
	want = blocked ? 0 : 2;
	if (blocked) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGCHLD);
		sigprocmask(SIG_BLOCK, &set, NULL);
	}
	exited = fork();
	if (exited == 0)
		_exit(7);
	killed = fork();
	if (killed == 0) {
		for (;;)
			pause();
	}
	/* One live child too, that stays. */
	alive_child = fork();
	if (alive_child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	if (exited < 0 || killed < 0 || alive_child < 0)
		fr_die("fork");
	/* One SIGCHLD at a time: two ends close together would give one signal (standard
	 * signals do not queue), and the handler would never count two. */
	while (state_of(exited) != 'Z' || (!blocked && sigchld < 1))
		usleep(1000);
	kill(killed, SIGTERM);
	while (sigchld < want || state_of(exited) != 'Z' || state_of(killed) != 'Z')
		usleep(1000);
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
