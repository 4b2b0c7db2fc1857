/* setresuid(1000, 1001, 0) from root with capabilities kept (PR_SET_KEEPCAPS around it, then
 * the effective set raised again), then setfsuid(1002): getresuid and setfsuid(-1) read them.
 * compat-object: real/effective/saved/fs user ids
 */
#include "common.h"

#include <linux/capability.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static const char *check(void)
{
	static char why[128];
	uid_t r, e, s;
	getresuid(&r, &e, &s);
	int fs = setfsuid((uid_t)-1);
	if (r != 1000 || e != 1001 || s != 0 || fs != 1002) {
		snprintf(why, sizeof(why), "uids %d %d %d fs %d want 1000 1001 0 1002", r, e, s, fs);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0);
	if (setresuid(1000, 1001, 0))
		fr_die("setresuid");
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	syscall(SYS_capget, &h, d);
	d[0].effective = d[0].permitted;
	d[1].effective = d[1].permitted;
	if (syscall(SYS_capset, &h, d))
		fr_die("capset");
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	setfsuid(1002);
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
