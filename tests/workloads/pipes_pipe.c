/* Pipes with both ends in the process, and the bytes queued in them.
 * compat-object: pipes with queued bytes
 *
 *   A: a pipe with a 256 KiB buffer holding 200000 bytes; its read end dup'd (same open file
 *      description) to fd 40, its write end also reopened through /proc (another description).
 *   B: a pipe whose write end is closed: 3000 bytes then end of file.
 *   C: an empty pipe, read end O_NONBLOCK.
 * SIGUSR1: drain A and check every byte, then refill it; drain B once (then expect EOF);
 * check buffer size, flags, and which descriptors share a description (kcmp).
 */
#include "common.h"
#include <sys/syscall.h>
#include <linux/kcmp.h>

#define A_LEN 200000
#define B_LEN 3000

static int a[2], a_dup, a_w2, b_r, c[2];
static int b_done;

static unsigned char pat(long i, int which) { return (unsigned char)((i * 13 + which * 7 + i / 4093) & 0xff); }

static int same(int x, int y) { return syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, x, y) == 0; }

static void fill(int fd, long len, int which)
{
	unsigned char *buf = malloc((size_t)len);
	for (long i = 0; i < len; i++)
		buf[i] = pat(i, which);
	fr_write_all(fd, (const char *)buf, (size_t)len);
	free(buf);
}

/* Reads everything queued without blocking; returns the count, -1 on a wrong byte. */
static long drain(int fd, int which, int *eof)
{
	unsigned char buf[8192];
	long got = 0;
	*eof = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EAGAIN)
			return got;
		if (n < 0)
			fr_die("read");
		if (n == 0) {
			*eof = 1;
			return got;
		}
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pat(got + i, which)) {
				fr_status("BAD byte %ld of pipe %c is %d", got + i, 'A' + which, buf[i]);
				return -1;
			}
		got += n;
	}
}

static void check(void)
{
	int eof;
	int sz = fcntl(a[1], F_GETPIPE_SZ);
	if (sz != 256 * 1024) {
		fr_status("BAD pipe A buffer is %d bytes", sz);
		return;
	}
	if (!same(a[0], a_dup) || same(a[0], a_w2) || same(a[1], a_w2) || same(a[0], a[1])) {
		fr_status("BAD descriptions: a0~dup %d a0~w2 %d a1~w2 %d", same(a[0], a_dup), same(a[0], a_w2), same(a[1], a_w2));
		return;
	}
	/* One description: O_NONBLOCK set through one fd shows through its dup. */
	int fl = fcntl(a[0], F_GETFL);
	if (!(fcntl(a_dup, F_GETFL) & O_NONBLOCK) || !(fl & O_NONBLOCK)) {
		fr_status("BAD read end of A lost O_NONBLOCK");
		return;
	}
	if ((fcntl(c[0], F_GETFL) & O_NONBLOCK) == 0 || (fcntl(c[1], F_GETFL) & O_NONBLOCK) != 0) {
		fr_status("BAD pipe C flags");
		return;
	}
	if ((fcntl(a_dup, F_GETFD) & FD_CLOEXEC) == 0 || (fcntl(a[0], F_GETFD) & FD_CLOEXEC) != 0) {
		fr_status("BAD close-on-exec flags of A's read ends");
		return;
	}
	long n = drain(a_dup, 0, &eof);
	if (n != A_LEN || eof) {
		fr_status("BAD pipe A held %ld bytes (eof %d), expected %d", n, eof, A_LEN);
		return;
	}
	fill(a_w2, A_LEN, 0);
	long nb = drain(b_r, 1, &eof);
	if (!b_done && (nb != B_LEN || !eof)) {
		fr_status("BAD pipe B held %ld bytes (eof %d), expected %d then eof", nb, eof, B_LEN);
		return;
	}
	if (b_done && (nb != 0 || !eof)) {
		fr_status("BAD pipe B after draining: %ld bytes, eof %d", nb, eof);
		return;
	}
	b_done = 1;
	long nc = drain(c[0], 2, &eof);
	if (nc != 0 || eof) {
		fr_status("BAD pipe C: %ld bytes, eof %d", nc, eof);
		return;
	}
	fr_status("ok pid=%d a=%ld b=%ld a_fds=%d,%d,%d,%d", (int)getpid(), n, nb, a[0], a[1], a_dup, a_w2);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (pipe(a) || pipe(c))
		fr_die("pipe");
	if (fcntl(a[1], F_SETPIPE_SZ, 256 * 1024) < 0)
		fr_die("F_SETPIPE_SZ");
	fcntl(a[0], F_SETFL, O_NONBLOCK);
	fcntl(c[0], F_SETFL, O_NONBLOCK);
	a_dup = fcntl(a[0], F_DUPFD_CLOEXEC, 40);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", a[1]);
	a_w2 = open(path, O_WRONLY);
	if (a_dup < 0 || a_w2 < 0)
		fr_die("dup");
	fill(a_w2, A_LEN, 0);
	int b[2];
	if (pipe2(b, O_NONBLOCK))
		fr_die("pipe2");
	fill(b[1], B_LEN, 1);
	close(b[1]);
	b_r = b[0];
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(++tick);
		usleep(50000);
	}
}
