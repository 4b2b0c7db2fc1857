/* O_APPEND: after seeking to 0, a write still lands at the end of the file.
 * compat-object: regular file opened O_APPEND
 */
#include "common.h"

static int fd;
static long size = 300;

static void check(void)
{
	int fl = fcntl(fd, F_GETFL);
	if (!(fl & O_APPEND) || (fl & O_ACCMODE) != O_RDWR) {
		fr_status("BAD flags %o (no O_APPEND or not O_RDWR)", fl);
		return;
	}
	lseek(fd, 0, SEEK_SET);
	if (write(fd, "XY", 2) != 2) {
		fr_status("BAD write: %s", strerror(errno));
		return;
	}
	size += 2;
	struct stat st;
	fstat(fd, &st);
	char b[2];
	if (st.st_size != size || pread(fd, b, 2, 0) != 2 || b[0] != 'a' ||
	    pread(fd, b, 2, size - 2) != 2 || memcmp(b, "XY", 2)) {
		fr_status("BAD size %lld want %ld, or write not appended", (long long)st.st_size, size);
		return;
	}
	fr_status("ok size=%ld", size);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("log.txt", O_RDWR | O_CREAT | O_TRUNC | O_APPEND, 0644);
	char z[300];
	memset(z, 'a', sizeof(z));
	if (write(fd, z, sizeof(z)) != (ssize_t)sizeof(z))
		fr_die("write");
	lseek(fd, 17, SEEK_SET);
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
