/* PR_SET_PDEATHSIG(SIGUSR2) on the victim itself: PR_GET_PDEATHSIG reads it back.
 * compat-object: parent-death signal (PR_SET_PDEATHSIG)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	int s = 0;
	prctl(PR_GET_PDEATHSIG, &s, 0, 0, 0);
	if (s != SIGUSR2)
		return "PR_GET_PDEATHSIG is not SIGUSR2";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0))
		fr_die("prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0)");
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
