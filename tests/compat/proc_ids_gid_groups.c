/* setresgid(2000, 2001, 2002), setfsgid(2003), supplementary groups {5, 7, 60000, 4}:
 * getresgid, setfsgid(-1), getgroups.
 * compat-object: group ids and supplementary groups
 */
#include "common.h"

#include <grp.h>
#include <sys/fsuid.h>

static const gid_t groups[] = {5, 7, 60000, 4};
static const gid_t sorted[] = {4, 5, 7, 60000}; /* the kernel keeps them sorted */

static const char *check(void)
{
	static char why[128];
	gid_t r, e, s, g[16];
	getresgid(&r, &e, &s);
	int fs = setfsgid((gid_t)-1);
	if (r != 2000 || e != 2001 || s != 2002 || fs != 2003) {
		snprintf(why, sizeof(why), "gids %d %d %d fs %d", r, e, s, fs);
		return why;
	}
	int n = getgroups(16, g);
	if (n != 4 || memcmp(g, sorted, sizeof(sorted))) {
		snprintf(why, sizeof(why), "%d supplementary groups, or other ones", n);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	if (setgroups(4, groups))
		fr_die("setgroups");
	if (setresgid(2000, 2001, 2002))
		fr_die("setresgid");
	setfsgid(2003);
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
