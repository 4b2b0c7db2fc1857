/* The working directory was removed: getcwd says "(unreachable)"/"(deleted)" semantics, stat(".")
 * shows nlink 0, and a relative create fails with ENOENT.
 * compat-object: working directory removed while in it
 */
#include "common.h"

static void check(void)
{
	struct stat st;
	if (stat(".", &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0) {
		fr_status("BAD cwd nlink %ld (want 0, removed)", (long)st.st_nlink);
		return;
	}
	char l[4200];
	ssize_t n = readlink("/proc/self/cwd", l, sizeof(l) - 1);
	l[n < 0 ? 0 : n] = 0;
	if (!strstr(l, "/cwdgone (deleted)")) {
		fr_status("BAD cwd link '%s'", l);
		return;
	}
	int f = open("newfile", O_WRONLY | O_CREAT, 0644);
	if (f >= 0 || errno != ENOENT) {
		fr_status("BAD create in removed cwd: %s", f >= 0 ? "worked" : strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/cwdgone", fr_dir);
	if (mkdir(p, 0755) || chdir(p) || rmdir(p))
		fr_die("cwd");
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
