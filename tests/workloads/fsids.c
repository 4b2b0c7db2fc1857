/* fsids STATEDIR
 *
 * Ids where the filesystem ones are none of the others: from root, with capabilities kept
 * across the change (PR_SET_KEEPCAPS, then the effective set raised again),
 * setresgid(2000, 2001, 0), setresuid(1000, 1001, 0), then setfsgid(2002) and setfsuid(1002).
 * SIGUSR1: "ok checks=N" when getresuid/getresgid and setfsuid(-1)/setfsgid(-1) still say
 * so, else "BAD ...".
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
	gid_t gr, ge, gs;
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	int fs = setfsuid((uid_t)-1), fg = setfsgid((gid_t)-1);
	if (r != 1000 || e != 1001 || s != 0 || fs != 1002 || gr != 2000 || ge != 2001 || gs != 0 ||
	    fg != 2002) {
		snprintf(why, sizeof(why), "uids %d %d %d fs %d, gids %d %d %d fs %d", r, e, s, fs, gr,
			 ge, gs, fg);
		return why;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		fr_die("PR_SET_KEEPCAPS");
	if (setresgid(2000, 2001, 0))
		fr_die("setresgid");
	if (setresuid(1000, 1001, 0))
		fr_die("setresuid");
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		fr_die("capget");
	d[0].effective = d[0].permitted;
	d[1].effective = d[1].permitted;
	if (syscall(SYS_capset, &h, d))
		fr_die("capset");
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	setfsgid(2002);
	setfsuid(1002);
	if (check())
		fr_die(check());
	fr_ready();
	long checks = 0;
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		const char *why = check();
		if (why) {
			fr_status("BAD %s", why);
		} else {
			checks++;
			fr_status("ok checks=%ld", checks);
		}
	}
}
