/* A file opened under one name, then renamed into a subdirectory, with a new file created under
 * the old name: the descriptor is still the renamed file (its inode and bytes), not the new one.
 * compat-object: open file renamed, old name reused
 */
#include "common.h"

static int fd;
static ino_t want;

static void check(void)
{
	struct stat st;
	fstat(fd, &st);
	char b[8] = "";
	if (st.st_ino != want || pread(fd, b, 8, 0) != 8 || memcmp(b, "original", 8)) {
		fr_status("BAD the descriptor is another file (ino %lu want %lu, '%.8s')", (unsigned long)st.st_ino,
			  (unsigned long)want, b);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096], q[4096];
	snprintf(p, sizeof(p), "%s/name", fr_dir);
	snprintf(q, sizeof(q), "%s/sub", fr_dir);
	mkdir(q, 0755);
	snprintf(q, sizeof(q), "%s/sub/moved", fr_dir);
	fd = open(p, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || write(fd, "original", 8) != 8 || rename(p, q))
		fr_die("rename");
	int imp = open(p, O_WRONLY | O_CREAT, 0644);
	if (imp < 0 || write(imp, "impostor", 8) != 8)
		fr_die("impostor");
	close(imp);
	struct stat st;
	fstat(fd, &st);
	want = st.st_ino;
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
