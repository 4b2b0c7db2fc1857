/* O_PATH descriptors: of a regular file (fstat, *at calls relative to it), and of a directory used
 * as dirfd for openat.
 * compat-object: O_PATH descriptors of a file and a directory
 */
#include "common.h"

static int pf, pd;
static struct stat want_f, want_d;

static void check(void)
{
	struct stat st;
	if ((fcntl(pf, F_GETFL) & O_PATH) != O_PATH || (fcntl(pd, F_GETFL) & O_PATH) != O_PATH) {
		fr_status("BAD O_PATH flag lost: %o %o", fcntl(pf, F_GETFL), fcntl(pd, F_GETFL));
		return;
	}
	if (fstat(pf, &st) || st.st_ino != want_f.st_ino || st.st_dev != want_f.st_dev) {
		fr_status("BAD O_PATH file is another inode");
		return;
	}
	char b[1];
	if (read(pf, b, 1) != -1 || errno != EBADF) {
		fr_status("BAD an O_PATH fd could be read");
		return;
	}
	if (fstat(pd, &st) || st.st_ino != want_d.st_ino) {
		fr_status("BAD O_PATH dir is another inode");
		return;
	}
	int f = openat(pd, "inner", O_RDONLY);
	if (f < 0 || read(f, b, 1) != 1 || b[0] != 'i') {
		fr_status("BAD openat relative to the O_PATH dir: %s", strerror(errno));
		if (f >= 0)
			close(f);
		return;
	}
	close(f);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("file", 10);
	char p[4096];
	snprintf(p, sizeof(p), "%s/sub", fr_dir);
	mkdir(p, 0755);
	int f = fr_open_in_dir("sub/inner", O_WRONLY | O_CREAT, 0644);
	if (write(f, "inner", 5) != 5)
		fr_die("write");
	close(f);
	pf = fr_open_in_dir("file", O_PATH, 0);
	pd = fr_open_in_dir("sub", O_PATH | O_DIRECTORY, 0);
	fstat(pf, &want_f);
	fstat(pd, &want_d);
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
