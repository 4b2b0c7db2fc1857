/* pgrp_leader STATEDIR
 *
 * Leads its own process group (setpgid(0, 0)) inside the session it was started in, which it
 * does not lead. SIGUSR1: "ok checks=N pgrp=G sid=S" while getpgrp() is its pid and getsid(0)
 * the session it started in, else "BAD ...".
 */
#include "common.h"

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	pid_t sid0 = getsid(0);
	if (sid0 == getpid())
		fr_die("started as a session leader");
	if (setpgid(0, 0))
		fr_die("setpgid");
	fr_ready();
	long checks = 0;
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		pid_t pg = getpgrp(), sid = getsid(0);
		if (pg != fr_pid0 || sid != sid0) {
			fr_status("BAD pgrp %d sid %d, want %d %d", (int)pg, (int)sid, (int)fr_pid0,
				  (int)sid0);
		} else {
			checks++;
			fr_status("ok checks=%ld pgrp=%d sid=%d", checks, (int)pg, (int)sid);
		}
	}
}
