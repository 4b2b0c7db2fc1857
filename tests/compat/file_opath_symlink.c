/* A symbolic link itself held open with O_PATH|O_NOFOLLOW: it must stay the link (S_ISLNK,
 * readlinkat(fd, "") gives its target), not the file it points to.
 * compat-object: symlink opened O_PATH|O_NOFOLLOW
 */
#include "common.h"

static int fd;
static ino_t want_ino;

static void check(void)
{
	struct stat st;
	if (fstat(fd, &st) || !S_ISLNK(st.st_mode) || st.st_ino != want_ino) {
		fr_status("BAD not the symlink any more (mode %o)", st.st_mode);
		return;
	}
	char t[256];
	ssize_t n = readlinkat(fd, "", t, sizeof(t) - 1);
	if (n < 0) {
		fr_status("BAD readlinkat: %s", strerror(errno));
		return;
	}
	t[n] = 0;
	if (strcmp(t, "target-does-not-exist")) {
		fr_status("BAD link target '%s'", t);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/link", fr_dir);
	if (symlink("target-does-not-exist", p))
		fr_die("symlink");
	fd = open(p, O_PATH | O_NOFOLLOW);
	if (fd < 0)
		fr_die("open");
	struct stat st;
	fstat(fd, &st);
	want_ino = st.st_ino;
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
