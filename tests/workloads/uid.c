/* Drops to uid/gid 65534 with groups {65534, 100} (after opening its files as root), then
 * compat-object: unprivileged uid/gid and groups
 * counts. SIGUSR1: "ok pid=P counter=N uid=65534" when getresuid/getresgid/getgroups still say
 * so, else "BAD ...". */
#include "common.h"

#include <grp.h>

static int creds_ok(char *why, size_t len)
{
	uid_t r, e, s;
	gid_t gr, ge, gs;
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	if (r != 65534 || e != 65534 || s != 65534) {
		snprintf(why, len, "uids %d %d %d", (int)r, (int)e, (int)s);
		return 0;
	}
	if (gr != 65534 || ge != 65534 || gs != 65534) {
		snprintf(why, len, "gids %d %d %d", (int)gr, (int)ge, (int)gs);
		return 0;
	}
	gid_t groups[16];
	int n = getgroups(16, groups);
	int has_nogroup = 0, has_users = 0;
	for (int i = 0; i < n; i++) {
		has_nogroup |= groups[i] == 65534;
		has_users |= groups[i] == 100;
	}
	if (n != 2 || !has_nogroup || !has_users) {
		snprintf(why, len, "%d groups", n);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	gid_t groups[] = {65534, 100};
	if (setgroups(2, groups))
		fr_die("setgroups");
	if (setresgid(65534, 65534, 65534))
		fr_die("setresgid");
	if (setresuid(65534, 65534, 65534))
		fr_die("setresuid");
	fr_ready();
	unsigned long counter = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			char why[128];
			if (creds_ok(why, sizeof(why)))
				fr_status("ok pid=%d counter=%lu uid=%d", (int)getpid(), counter,
					  (int)geteuid());
			else
				fr_status("BAD %s", why);
		}
		counter++;
		fr_log_tick(counter);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
