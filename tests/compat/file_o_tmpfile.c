/* An O_TMPFILE file (never had a name) in the state dir, with contents, mode 0604 and an offset:
 * still unnamed (nlink 0), same bytes, mode and offset; linkat through /proc can still give it a
 * name (it was not made O_EXCL, and never linked before: tried once, after the restore).
 * compat-object: O_TMPFILE file (unnamed)
 */
#include "common.h"

static int fd;
static int n;

static void check(void)
{
	struct stat st;
	fstat(fd, &st);
	if (st.st_nlink != 0 || (st.st_mode & 07777) != 0604 || st.st_size != 5000) {
		fr_status("BAD nlink %ld mode %o size %lld", (long)st.st_nlink, st.st_mode & 07777, (long long)st.st_size);
		return;
	}
	if (lseek(fd, 0, SEEK_CUR) != 1234) {
		fr_status("BAD offset %lld", (long long)lseek(fd, 0, SEEK_CUR));
		return;
	}
	unsigned char b[16];
	if (pread(fd, b, 16, 4000) != 16 || b[3] != fr_data_byte(4003)) {
		fr_status("BAD contents");
		return;
	}
	/* A file made O_TMPFILE without O_EXCL can be linked once (the first link clears the
	 * inode's I_LINKABLE): tried on the second check only (the one after the restore). */
	if (++n != 2) {
		fr_status("ok");
		return;
	}
	char src[64], dst[4096];
	snprintf(src, sizeof(src), "/proc/self/fd/%d", fd);
	snprintf(dst, sizeof(dst), "%s/linked-%d", fr_dir, n);
	if (linkat(AT_FDCWD, src, AT_FDCWD, dst, AT_SYMLINK_FOLLOW)) {
		fr_status("BAD linkat: %s (O_TMPFILE without O_EXCL can be linked)", strerror(errno));
		return;
	}
	unlink(dst);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = open(fr_dir, O_TMPFILE | O_RDWR, 0604);
	if (fd < 0)
		fr_die("O_TMPFILE");
	unsigned char b[5000];
	for (int i = 0; i < 5000; i++)
		b[i] = fr_data_byte(i);
	if (write(fd, b, 5000) != 5000)
		fr_die("write");
	fchmod(fd, 0604);
	lseek(fd, 1234, SEEK_SET);
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
