/* PR_CAPBSET_DROP of CAP_SYS_BOOT (22) and CAP_MKNOD (27): PR_CAPBSET_READ shows them out, others in.
 * compat-object: capability bounding set with CAP_SYS_BOOT and CAP_MKNOD dropped
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static const char *check(void)
{
	if (prctl(PR_CAPBSET_READ, 22, 0, 0, 0) != 0 || prctl(PR_CAPBSET_READ, 27, 0, 0, 0) != 0)
		return "a dropped capability is back in the bounding set";
	if (prctl(PR_CAPBSET_READ, 21, 0, 0, 0) != 1)
		return "CAP_SYS_ADMIN left the bounding set";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_CAPBSET_DROP, 22, 0, 0, 0) || prctl(PR_CAPBSET_DROP, 27, 0, 0, 0))
		fr_die("prctl(PR_CAPBSET_DROP, 22, 0, 0, 0) || prctl(PR_CAPBSET_DROP, 27, 0, 0, 0)");
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
