/* Two pipes, bytes queued in each (60000 and 333 bytes),
 * checked byte for byte.
 * compat-object: pipes with queued bytes in both directions
 */
#include "common.h"

static int a[2], b[2];
static int checks;

static int drain(int fd, long want, long seed)
{
	unsigned char buf[4096];
	long got = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != fr_data_byte(got + i + seed))
				return -1;
		got += n;
	}
	return got == want ? 0 : -2;
}

static void fill(int fd, long len, long seed)
{
	unsigned char buf[4096];
	for (long off = 0; off < len; off += 4096) {
		long n = len - off < 4096 ? len - off : 4096;
		for (long i = 0; i < n; i++)
			buf[i] = fr_data_byte(off + i + seed);
		if (write(fd, buf, (size_t)n) != n)
			fr_die("fill");
	}
}

static void check(void)
{
	int x = drain(a[0], 60000, 1), y = drain(b[0], 333, 2);
	if (x || y) {
		fr_status("BAD pipe contents a=%d b=%d", x, y);
		return;
	}
	fill(a[1], 60000, 1);
	fill(b[1], 333, 2);
	fr_status("ok checks=%d", ++checks);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (pipe2(a, O_NONBLOCK) || pipe2(b, O_NONBLOCK))
		fr_die("pipe");
	fill(a[1], 60000, 1);
	fill(b[1], 333, 2);
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
