/* O_DIRECT on a regular file: the flag, the offset, and that an aligned direct read still works.
 * compat-object: regular file opened O_DIRECT
 */
#include "common.h"

static int fd;

static void check(void)
{
	int fl = fcntl(fd, F_GETFL);
	if (!(fl & O_DIRECT)) {
		fr_status("BAD O_DIRECT lost: %o", fl);
		return;
	}
	if (lseek(fd, 0, SEEK_CUR) != 8192) {
		fr_status("BAD offset %lld", (long long)lseek(fd, 0, SEEK_CUR));
		return;
	}
	void *buf;
	if (posix_memalign(&buf, 4096, 4096)) {
		fr_status("BAD memalign");
		return;
	}
	ssize_t n = pread(fd, buf, 4096, 4096);
	if (n != 4096 || ((unsigned char *)buf)[5] != fr_data_byte(4096 + 5)) {
		fr_status("BAD direct read %zd: %s", n, strerror(errno));
		free(buf);
		return;
	}
	free(buf);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("data", 65536);
	fd = fr_open_in_dir("data", O_RDONLY | O_DIRECT, 0);
	lseek(fd, 8192, SEEK_SET);
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
