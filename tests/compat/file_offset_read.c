/* A regular file opened read-only and read part way: the offset and the bytes that follow.
 * compat-object: regular file offset after reads (O_RDONLY)
 */
#include "common.h"

static int fd;
static long pos = 12345;

static void check(void)
{
	off_t cur = lseek(fd, 0, SEEK_CUR);
	if (cur != pos) {
		fr_status("BAD offset %lld, want %ld", (long long)cur, pos);
		return;
	}
	unsigned char b[100];
	if (read(fd, b, sizeof(b)) != (ssize_t)sizeof(b)) {
		fr_status("BAD read: %s", strerror(errno));
		return;
	}
	for (int i = 0; i < 100; i++)
		if (b[i] != fr_data_byte(pos + i)) {
			fr_status("BAD byte at %ld", pos + i);
			return;
		}
	pos += 100;
	int fl = fcntl(fd, F_GETFL);
	if ((fl & O_ACCMODE) != O_RDONLY) {
		fr_status("BAD access mode %o", fl);
		return;
	}
	fr_status("ok offset=%ld", pos);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("data", 1 << 20);
	fd = fr_open_in_dir("data", O_RDONLY, 0);
	unsigned char b[4096];
	if (read(fd, b, 4096) != 4096 || lseek(fd, pos, SEEK_SET) != pos)
		fr_die("read");
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
