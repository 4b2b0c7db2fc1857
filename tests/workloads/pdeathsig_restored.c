/* pdeathsig_restored STATEDIR
 *
 * A process with a parent-death signal (PR_SET_PDEATHSIG SIGUSR2) and a handler for it.
 * On SIGUSR1 it reports "ok pdeathsig=N ppid=P" (PR_GET_PDEATHSIG and getppid()), or "BAD ..."
 * when the signal is not SIGUSR2. When SIGUSR2 comes (its parent died) it writes "fired 12"
 * to the status file and goes on counting.
 */
#include "common.h"

#include <sys/prctl.h>

static void on_usr2(int sig)
{
	int saved = errno;
	fr_status_sigsafe("fired", sig);
	errno = saved;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGUSR2, on_usr2, SA_RESTART);
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0))
		fr_die("prctl(PR_SET_PDEATHSIG)");
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			int sig = 0;
			prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0);
			if (sig == SIGUSR2)
				fr_status("ok pdeathsig=%d ppid=%d", sig, (int)getppid());
			else
				fr_status("BAD pdeathsig=%d ppid=%d", sig, (int)getppid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
